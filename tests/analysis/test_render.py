"""summary.md says where the probe's solver stopped at its iteration limit."""

from viny_probe.analysis.render import _convergence


def _summary(**converged):
    return {"final_layer": {name: {"probe": {"converged": ok}} for name, ok in converged.items()}}


def test_convergence_sentence_names_the_fits_that_stopped() -> None:
    """Mutant: _convergence returning "" always -> neither sentence appears."""
    assert "converged for every checkpoint" in _convergence(_summary(A=True, B=True))
    said = _convergence(_summary(A=True, B=False, C=False))
    assert "iteration limit for B, C" in said and "A" not in said.split("for ")[1].split(" (")[0]


def test_no_sentence_without_a_probe() -> None:
    assert _convergence({"final_layer": {"A": {"probe": None}}}) == ""
