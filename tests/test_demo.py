import json

from viny_probe.demo import run_demo


def test_demo_chain_runs_and_resumes(tmp_path):
    s = run_demo(tmp_path / "demo", model="tiny", device="cpu", epochs_scale=0.05, progress=False)
    assert list(s["stages"]) == ["simmim", "classify", "segment"]
    seg = s["stages"]["segment"]["results"]
    assert set(seg["baselines"]) == {"all_background", "position_prior"}
    assert (tmp_path / "demo" / "3-segment" / "predictions.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["stages"]["segment"]["run_dir"].endswith("3-segment")
    # the segment stage was initialised from the classify stage, which came from simmim
    from viny_probe.checkpoint import load_checkpoint

    lineage = load_checkpoint(tmp_path / "demo" / "3-segment" / "final.pt")["lineage"]
    assert [e["regime"] for e in lineage] == ["simmim", "classify"]
    # a rerun with --resume finds every stage finished and trains nothing
    mtime = (tmp_path / "demo" / "1-simmim" / "final.pt").stat().st_mtime_ns
    again = run_demo(
        tmp_path / "demo", model="tiny", device="cpu", epochs_scale=0.05, progress=False, resume=True
    )
    assert (tmp_path / "demo" / "1-simmim" / "final.pt").stat().st_mtime_ns == mtime
    assert again["stages"]["segment"]["results"]["test"]["miou"] == seg["test"]["miou"]
