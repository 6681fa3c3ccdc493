"""train and its checkpoints under hostile inputs and broken machines: pickles never
run, foreign checkpoints are named, corrupt shards are one line, a full disk keeps the
last checkpoint, and a SIGKILL then --resume equals the run that was never stopped."""

from __future__ import annotations

import json
import random
import signal

import pytest
import torch
from fault_helpers import cli, cpu_of, frozen_at, one_line_error, remount, run_main, temp_files
from hostile import hostile_shards
from make_data import tiny_model_config

from metauas.errors import UserError
from metauas.model.checkpoint import read_checkpoint, save_checkpoint
from metauas.model.network import MetaUAS

TRAIN = [
    "--size",
    "32",
    "--batch-size",
    "2",
    "--encoder-weights",
    "none",
    "--workers",
    "0",
    "--no-progress",
    "--log-every",
    "1",
    "--warmup",
    "3",
]


def rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


class Payload:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def tiny(tmp_path):
    model = MetaUAS(tiny_model_config())
    return model, save_checkpoint(tmp_path / "tiny.pt", model, size=64, step=0)


def _edit(path, out, change) -> str:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, out)
    return str(out)


def test_a_pickle_in_a_checkpoint_never_runs(tmp_path, tiny, mvtec_root, shard_dir, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"meta": {"format": "metauas-checkpoint/1"}, "model": Payload(marker)}, evil)
    image = mvtec_root / "tile" / "train" / "good" / "000.png"
    one_line_error(
        run_main(capsys, "predict", "--checkpoint", evil, "--prompt", image, "--query", image, "--out", tmp_path / "p"),
        "corrupt or not a checkpoint",
    )
    one_line_error(
        run_main(capsys, "evaluate", "--checkpoint", evil, "--data", mvtec_root, "--out", tmp_path / "e"),
        "corrupt or not a checkpoint",
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(evil.read_bytes())
    one_line_error(
        run_main(capsys, "train", "--train", shard_dir / "train", "--out", run, "--steps", "2", "--resume", *TRAIN),
        "corrupt or not a checkpoint",
    )
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda p: p["meta"]["config"].update(fusion="cat"), ["weights do not fit", "fusion cat", "of another shape"]),
        (lambda p: p["meta"]["config"].update(dropout=0.1), ["unknown key(s) dropout"]),
        (lambda p: p.update(meta=["not", "an", "object"]), ["not a metauas checkpoint"]),
        (lambda p: p["meta"].update(size="large"), ["meta.size"]),
        (lambda p: p["meta"].update(size=10**9), ["meta.size", "32 to 4096"]),  # predict would resize to it
        (lambda p: p["meta"]["config"].update(decoder_channels=[10**9] * 5), ["decoder channels"]),
        (lambda p: p["model"].pop(next(iter(p["model"]))), ["1 missing"]),
        (  # a view of 10^12 elements over one float: any check of its values would allocate them
            lambda p: p["model"].update({next(iter(p["model"])): torch.zeros(1).expand(10**6, 10**6)}),
            ["claims more elements than its data holds"],
        ),
    ],
)
def test_checkpoint_fields_are_checked_before_use(tmp_path, tiny, mvtec_root, capsys, change, words):
    bad = _edit(tiny[1], tmp_path / "bad.pt", change)
    image = mvtec_root / "tile" / "train" / "good" / "000.png"
    proc = run_main(
        capsys, "predict", "--checkpoint", bad, "--prompt", image, "--query", image, "--out", tmp_path / "p"
    )
    one_line_error(proc, *words)


def test_resume_of_a_model_only_checkpoint_is_refused(tmp_path, tiny, shard_dir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(tiny[1].read_bytes())  # as `import-official` writes it: no training state
    proc = run_main(capsys, "train", "--train", shard_dir / "train", "--out", run, "--steps", "2", "--resume", *TRAIN)
    one_line_error(proc, "without training state", "another --out")


def test_every_training_shard_corrupt_is_one_line(tmp_path, capsys):
    shards = hostile_shards(tmp_path / "shards")
    bad = [str(p) for name, p in shards.items() if name != "good"]
    proc = run_main(
        capsys, "train", "--train", ",".join(bad).join("{}"), "--out", tmp_path / "run", "--steps", "2", *TRAIN
    )
    one_line_error(proc, "no readable training pairs", "corrupt_sample", "unreadable_shard")
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, small_disk, shard_dir):
    """A checkpoint of the default model (random encoder weights) is about 66 MB: the
    disk holds one, not the temporary copy of the next."""
    disk = small_disk("100m")
    run = disk / "run"
    args = ["--train", shard_dir / "train", "--out", run, "--steps", "6", "--save-every", "2", *TRAIN]
    line = one_line_error(cli("train", *args), "no space left on device", "last.pt holds step 2", "--resume")
    assert not temp_files(run)
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == 2
    remount(disk, "size=250m")
    assert cli("train", *args, "--resume").returncode == 0, line
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == 6
    steps = [r["step"] for r in rows(run) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
@pytest.mark.parametrize("ema", [[], ["--ema", "0.9"]], ids=["plain", "ema"])
def test_sigkill_then_resume_equals_the_run_never_stopped(tmp_path, shard_dir, ema):
    """Killed by the kernel at a random share of the run's CPU time, resumed: the same
    weights (with --ema the average and the raw weights both), the same losses on the
    same data, the same learning rates, no row twice.
    A kill before the first save (CPU per step grows on a busy machine) leaves nothing to
    resume: --resume is then one line, and the plain rerun it asks for equals too."""
    args = [
        "--train",
        shard_dir / "train",
        "--val",
        shard_dir / "val",
        "--steps",
        "24",
        "--save-every",
        "4",
        "--val-every",
        "8",
        "--val-pairs",
        "4",
        *TRAIN,
        *ema,
    ]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cpu = cpu_of(lambda: cli("train", *args, "--out", straight))
    kill_at = random.randint(max(1, int(0.4 * cpu)), max(1, int(0.8 * cpu)))
    proc = cli("train", *args, "--out", killed, cpu_seconds=kill_at)
    assert proc.returncode == -signal.SIGKILL, f"killed at {kill_at} of {cpu:.1f} CPU s: {proc.stderr[-2000:]}"
    again = ["--resume"]
    if not (killed / "last.pt").exists():  # killed before its first save (a busy machine spends more CPU a step)
        one_line_error(cli("train", *args, "--out", killed, *again), "holds no last.pt", "without --resume")
        again = []  # as the line says: start again; the killed run's rows are dropped
    proc = cli("train", *args, "--out", killed, *again)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(killed / "last.pt")
    assert a["meta"]["step"] == b["meta"]["step"] == 24
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    raw = a["training"].get("raw_weights", {})
    assert bool(raw) == bool(ema) and all(torch.equal(v, b["training"]["raw_weights"][k]) for k, v in raw.items())
    keep = ("step", "loss", "lr", "val_p_auroc", "val_p_ap", "val_loss")
    same = [[{k: r[k] for k in keep if k in r} for r in rows(run)] for run in (straight, killed)]
    assert same[0] == same[1]
    assert not temp_files(killed)


def test_a_diverging_training_stops_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path, shard_dir):
    """--lr 1e30: the loss is NaN within a few steps. The run stops there in one line,
    last.pt is the step before (its weights finite), and no row holds a NaN."""
    run = tmp_path / "run"
    args = ["--train", shard_dir / "train", "--out", run, "--steps", "12", "--save-every", "1", "--lr", "1e30"]
    line = one_line_error(cli("train", *args, *TRAIN), "training diverged at step", "last good one", "--lr")
    step = int(line.split("diverged at step ")[1].split(":")[0])
    assert f"last.pt holds step {step - 1}" in line
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == step - 1  # loads: every weight finite

    def refuse(constant):
        raise AssertionError(f"{constant} in metrics.jsonl")

    logged = [json.loads(row, parse_constant=refuse) for row in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in logged) == step - 1 and not temp_files(run)


def test_a_checkpoint_with_nan_weights_is_refused_by_every_reader(tmp_path, tiny, mvtec_root, capsys):
    def poison(payload):
        name = next(k for k, v in payload["model"].items() if v.is_floating_point() and "decoder" in k)
        payload["model"][name].view(-1)[0] = float("nan")

    bad = _edit(tiny[1], tmp_path / "nan.pt", poison)
    image = mvtec_root / "tile" / "train" / "good" / "000.png"
    commands = [
        ["predict", "--checkpoint", bad, "--prompt", image, "--query", image, "--out", tmp_path / "p"],
        ["evaluate", "--checkpoint", bad, "--data", mvtec_root, "--out", tmp_path / "e"],
        ["export", "--checkpoint", bad, "--out", tmp_path / "x.onnx"],
    ]
    for args in commands:
        one_line_error(run_main(capsys, *args), "1 of its", "hold NaN or infinity", "diverged")
    assert not (tmp_path / "p" / "predictions.jsonl").exists() and not (tmp_path / "e" / "metrics.json").exists()
    run = tmp_path / "run"
    run.mkdir()
    model = MetaUAS(tiny_model_config())
    torch.nn.init.constant_(next(model.decoder.parameters()), float("inf"))
    with pytest.raises(UserError, match="not saving"):
        save_checkpoint(run / "last.pt", model, size=64, step=3)
    assert not list(run.iterdir())


def test_a_second_training_into_one_folder_is_refused_and_resume_needs_a_checkpoint(tmp_path, shard_dir, capsys):
    """The first run stops itself as it writes config.json (its lock is taken before
    anything is read or written there): the second is refused in one line and writes
    nothing; the first then ends as if alone. `--resume` with last.pt gone is one line
    too, and the run's log stays as it was."""
    run = tmp_path / "run"
    args = ["train", "--train", shard_dir / "train", "--out", run, "--steps", "2", *TRAIN]
    first = frozen_at(".config.json.tmp-", *args)
    try:
        second = cli(*args)
    finally:
        first.send_signal(signal.SIGCONT)
    one_line_error(second, "another training run is writing there", "--resume")
    assert first.wait() == 0, first.communicate()
    assert read_checkpoint(run / "last.pt")["meta"]["step"] == 2
    assert [r["step"] for r in rows(run) if "loss" in r] == [1, 2]
    (run / "last.pt").unlink()
    logged = (run / "metrics.jsonl").read_bytes()
    one_line_error(run_main(capsys, *args, "--resume"), "--resume", "holds no last.pt")
    assert (run / "metrics.jsonl").read_bytes() == logged


def test_a_config_file_never_runs_a_shell_command(tmp_path, shard_dir, capsys):
    """`pipe:` shards from a --config file are refused before anything runs; typed on
    the command line beside the same file, they are the user's explicit choice."""
    marker = tmp_path / "ran"
    shard = shard_dir / "train" / "shard-000000.tar"
    command = f"pipe:touch {marker}; cat {shard}"
    config = tmp_path / "config.json"
    for settings in ({"train": command}, {"train": str(shard), "val": [str(shard), command]}):
        config.write_text(json.dumps({**settings, "out": str(tmp_path / "run"), "steps": 1}))
        proc = run_main(capsys, "train", "--config", config, *TRAIN)
        one_line_error(proc, "shards run a shell command", "may not run commands", "type --")
        assert not marker.exists() and not (tmp_path / "run").exists()
    config.write_text(json.dumps({"train": "unused", "out": str(tmp_path / "run"), "steps": 1}))
    assert run_main(capsys, "train", "--config", config, "--train", command, *TRAIN).returncode == 0
    assert marker.exists()
