"""One run on several processes: 2 CPU processes over gloo, launched as users launch them (torchrun and
`accelerate launch`), against one process taking the whole batch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_file

from tunewise.config import Config, load_config
from tunewise.errors import TunewiseError
from tunewise.files import hold_lock
from tunewise.train import loop
from tunewise.train.distributed import Ranks, launch_ranks, rank_micro_batches

LAUNCHED = Path(__file__).parent / "launched"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def accelerate_launch() -> list[str]:
    with socket.socket() as s:  # a free port: accelerate's default (29500) may be taken
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, chatml_tokenizer, write_tiny_model, sql_example, write_jsonl):
    """A model big enough that a run lasts seconds (a kill lands mid-run), SQL data of varied lengths."""
    root = tmp_path_factory.mktemp("ddp")
    model = write_tiny_model(root / "model", chatml_tokenizer, hidden=128, layers=4)
    write_jsonl(root / "train.jsonl", [sql_example(i, turns=1 + i % 3) for i in range(60)])
    write_jsonl(root / "val.jsonl", [sql_example(200 + i) for i in range(7)])  # 7: ranks get 4 and 3

    def config(name: str, dropout: float = 0.0, quantization: str = "none", **train) -> Path:
        settings = {"batch_size": 4, "micro_batch_size": 1, "max_steps": 8, "save_every": 2, "eval_every": 4,
                    "lr": 3e-3, "early_stopping_patience": None, **train}
        body = {"model": {"name": str(model), "dtype": "float32", "quantization": quantization},
                "lora": {"r": 4, "alpha": 8, "dropout": dropout},
                "data": {"train": str(root / "train.jsonl"), "val": str(root / "val.jsonl"), "max_seq_len": 128},
                "train": settings, "output_dir": str(root / name)}
        path = root / f"{name}.yaml"
        path.write_text(json.dumps(body))
        return path

    return SimpleNamespace(root=root, config=config)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def adapter(run_dir: Path, sub: str = "adapter") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / sub / "adapter_model.safetensors"))


def test_one_step_two_ranks_equals_one_process_on_the_whole_batch(setup):
    """Each rank takes other sequences; after the all-reduce both hold the same gradient, the one a single
    process computes over all of them (up to the order floats were summed in)."""
    script = str(LAUNCHED / "step_gradients.py")
    (setup.root / "g2").mkdir()
    (setup.root / "g1").mkdir()
    run(TORCHRUN + [script, str(setup.config("grad2")), str(setup.root / "g2")], setup.root)
    run([sys.executable, script, str(setup.config("grad1")), str(setup.root / "g1")], setup.root)
    r0, r1 = (torch.load(setup.root / "g2" / f"rank-{r}.pt") for r in (0, 1))
    one = torch.load(setup.root / "g1" / "rank-0.pt")
    assert r0["sequences"] and r1["sequences"] and not set(r0["sequences"]) & set(r1["sequences"])
    assert sorted(r0["sequences"] + r1["sequences"]) == one["sequences"]  # together: the whole batch
    assert r0["step_tokens"] == r1["step_tokens"] == one["step_tokens"]
    assert r0["token_budget"] == r1["token_budget"] == 3096  # ranks measured 4096 and 3096: the smaller
    assert r0["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert set(one["grads"]) == set(r0["grads"])
    for name, g in one["grads"].items():
        assert torch.equal(r0["grads"][name], r1["grads"][name]), name  # all-reduced: bit-identical
        torch.testing.assert_close(r0["grads"][name], g, rtol=1e-5, atol=1e-8)
    assert any(g.abs().sum() > 0 for g in one["grads"].values())


def test_two_processes_train_the_adapter_one_process_trains(setup):
    """8 steps with dropout 0 through `accelerate launch`: the same adapter as one process, up to float32
    summation order. AdamW divides by sqrt(v), so a weight whose gradient is ~0 can move its whole step
    on a rounding difference: measured, 1 of 512 elements of one matrix off by 2.2e-5 (of a 3e-3 step),
    the rest within 1e-6. Tolerance: every weight within 1e-4, 99% within 1e-6."""
    run(accelerate_launch() + ["-m", "tunewise.cli", "train", str(setup.config("two"))], setup.root)
    run([sys.executable, "-m", "tunewise.cli", "train", str(setup.config("one"))], setup.root)
    one, two = adapter(setup.root / "one"), adapter(setup.root / "two")
    differences = torch.cat([(two[name] - one[name]).abs().flatten() for name in one])
    assert differences.max() < 1e-4
    assert (differences < 1e-6).float().mean() > 0.99
    manifest = json.loads((setup.root / "two" / "manifest.json").read_text())
    assert (manifest["world_size"], manifest["engine"]) == (2, "MULTI_CPU")
    events = [json.loads(line) for line in (setup.root / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "train"] == list(range(1, 9))  # rank 0 alone writes
    val_one = [json.loads(line)["val_loss"] for line in (setup.root / "one" / "metrics.jsonl").read_text()
               .splitlines() if '"eval"' in line]
    assert [e["val_loss"] for e in events if e["event"] == "eval"] == pytest.approx(val_one, rel=1e-5)


def test_kill_9_of_one_rank_then_resume_gives_the_same_adapter(setup):
    """Dropout on, so each rank's random generators must come back too."""
    whole = setup.config("whole", dropout=0.1, max_steps=16)
    run(TORCHRUN + ["-m", "tunewise.cli", "train", str(whole)], setup.root)
    killed = setup.config("killed", dropout=0.1, max_steps=16)
    kill_rank_1_after_a_checkpoint(TORCHRUN + ["-m", "tunewise.cli", "train", str(killed)], setup.root / "killed",
                                   "step-16")

    resumed = run(TORCHRUN + ["-m", "tunewise.cli", "train", str(killed), "--resume"], setup.root)
    assert "resumed from" in resumed.stdout
    for sub in ("adapter", "checkpoints/step-16"):
        a, b = adapter(setup.root / "whole", sub), adapter(setup.root / "killed", sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub


def held_bytes(setup, name: str, **settings) -> list[dict]:
    """Each rank's parameter bytes (and the whole model's) at the start of an FSDP run."""
    out = setup.root / f"{name}-bytes"
    out.mkdir()
    run(TORCHRUN + [str(LAUNCHED / "fsdp_bytes.py"), str(setup.config(name, strategy="fsdp", **settings)), str(out)],
        setup.root)
    held = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    whole = held[0]["model_bytes"]
    assert all(abs(h["rank_bytes"] / whole - 0.5) < 0.01 for h in held), held  # about half each
    assert held[0]["rank_bytes"] + held[1]["rank_bytes"] == whole
    return held


def test_fsdp_trains_the_adapter_one_process_trains_on_half_the_weights_each(setup):
    """train.strategy=fsdp on 2 processes: every weight (frozen base too) split over the ranks, 8 steps with
    dropout 0 give the single-process adapter, written whole by rank 0 as a plain PEFT adapter."""
    held_bytes(setup, "fsdp-b")

    run(TORCHRUN + ["-m", "tunewise.cli", "train", str(setup.config("fsdp", strategy="fsdp"))], setup.root)
    if not (setup.root / "one").exists():
        run([sys.executable, "-m", "tunewise.cli", "train", str(setup.config("one"))], setup.root)
    one, two = adapter(setup.root / "one"), adapter(setup.root / "fsdp")
    assert set(one) == set(two)
    relative = max(((two[k] - one[k]).norm() / one[k].norm()).item() for k in one)
    assert relative <= 1e-5, relative
    manifest = json.loads((setup.root / "fsdp" / "manifest.json").read_text())
    assert (manifest["strategy"], manifest["world_size"]) == ("fsdp", 2)


def test_fsdp_trains_the_qlora_adapter_one_process_trains(setup):
    """QLoRA under FSDP: the packed 4-bit weights (uint8) are sharded like the rest (FSDP2 shards each
    parameter on its own: no bnb_4bit_quant_storage needed); 8 steps give the single-process QLoRA adapter."""
    held = held_bytes(setup, "q-fsdp-b", quantization="nf4")
    assert held[0]["linear_4bit"] == 4 * 7  # every projection of the 4 layers is 4-bit, and sharded
    run(TORCHRUN + ["-m", "tunewise.cli", "train", str(setup.config("q-fsdp", quantization="nf4", strategy="fsdp"))],
        setup.root)
    run([sys.executable, "-m", "tunewise.cli", "train", str(setup.config("q-one", quantization="nf4"))], setup.root)
    one, two = adapter(setup.root / "q-one"), adapter(setup.root / "q-fsdp")
    assert set(one) == set(two)
    relative = max(((two[k] - one[k]).norm() / one[k].norm()).item() for k in one)
    assert relative <= 1e-5, relative


def test_fsdp_kill_9_of_one_rank_then_resume_gives_the_same_adapter(setup):
    """Each rank's optimizer shard is in the checkpoint: the resumed run continues exactly. At another
    process count the shards cannot be loaded: refused with one message, printed once."""
    settings = dict(strategy="fsdp", dropout=0.1, max_steps=12)
    run(TORCHRUN + ["-m", "tunewise.cli", "train", str(setup.config("fsdp-whole", **settings))], setup.root)
    killed = setup.config("fsdp-killed", **settings)
    kill_rank_1_after_a_checkpoint(TORCHRUN + ["-m", "tunewise.cli", "train", str(killed)],
                                   setup.root / "fsdp-killed", last="step-12")
    one = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    refused = subprocess.run(one + ["-m", "tunewise.cli", "train", str(killed), "--resume"], cwd=setup.root,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "written by 2 process(es) under train.strategy fsdp" in refused.stderr, refused.stderr[-2000:]
    shards = sorted(p.name for p in ckpt_dir(setup.root / "fsdp-killed").glob("optimizer-rank-*.pt"))
    assert shards == ["optimizer-rank-0.pt", "optimizer-rank-1.pt"]
    resumed = run(TORCHRUN + ["-m", "tunewise.cli", "train", str(killed), "--resume"], setup.root)
    assert "resumed from" in resumed.stdout
    for sub in ("adapter", "checkpoints/step-12"):
        a, b = adapter(setup.root / "fsdp-whole", sub), adapter(setup.root / "fsdp-killed", sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub


def test_a_refusal_every_rank_raises_is_printed_once(setup):
    """Both ranks refuse the batch size; rank 0 alone says so, and the launch fails."""
    proc = subprocess.run(TORCHRUN + ["-m", "tunewise.cli", "train", str(setup.config("odd", batch_size=3))],
                          cwd=setup.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert proc.stderr.count("train.batch_size 3 does not divide among the 2 processes") == 1, proc.stderr[-3000:]


def ckpt_dir(run_dir: Path) -> Path:
    return max((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def kill_rank_1_after_a_checkpoint(command: list[str], run_dir: Path, last: str) -> None:
    launcher = subprocess.Popen(command, cwd=run_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    first = run_dir / "checkpoints" / "step-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.02)
    rank1 = [p for p in psutil.Process(launcher.pid).children(recursive=True) if p.environ().get("RANK") == "1"]
    assert rank1, "no rank 1 to kill"
    os.kill(rank1[0].pid, signal.SIGKILL)
    launcher.wait(timeout=120)
    assert launcher.returncode != 0
    done = {p.name for p in (run_dir / "checkpoints").glob("step-*")}
    assert done and last not in done, "the kill came too late to test anything"


def fake_accelerator(world: int, engine=DistributedType.MULTI_GPU, rank: int = 0):
    return SimpleNamespace(num_processes=world, process_index=rank, distributed_type=engine)


def config(batch_size: int = 8) -> Config:
    return Config.model_validate({"data": {"train": "x"}, "train": {"batch_size": batch_size}})


def test_launch_refusals_name_what_to_change(monkeypatch):
    with pytest.raises(TunewiseError, match=r"train\.batch_size 6 does not divide among the 4 processes"):
        launch_ranks(fake_accelerator(4), config(6))
    with pytest.raises(TunewiseError, match=r"distributed_type DEEPSPEED.*not supported"):
        launch_ranks(fake_accelerator(2, DistributedType.DEEPSPEED), config())
    # an accelerate config with an FSDP section: tunewise shards, as with train.strategy=fsdp
    assert launch_ranks(fake_accelerator(2, DistributedType.FSDP), config()).strategy == "fsdp"
    fsdp = Config.model_validate({"data": {"train": "x"}, "train": {"strategy": "fsdp"}})
    assert launch_ranks(fake_accelerator(2, DistributedType.MULTI_CPU), fsdp).strategy == "fsdp"
    assert launch_ranks(fake_accelerator(1, DistributedType.NO), fsdp).strategy == "none"  # one process: no sharding
    monkeypatch.setenv("WORLD_SIZE", "2")  # launched as 2, but accelerate joined nothing up
    with pytest.raises(TunewiseError, match=r"2 processes were launched.*each would train alone"):
        launch_ranks(fake_accelerator(1, DistributedType.NO), config())
    assert launch_ranks(fake_accelerator(2, rank=1), config()) == Ranks(1, 2, "MULTI_GPU", "ddp")


@pytest.mark.parametrize("micro", ["auto", 1, 2])
def test_every_rank_gets_the_same_number_of_micro_batches(micro):
    """A rank with one micro-batch fewer would hang the others' all-reduce: shares are evened out, a rank
    short of sequences repeats one with weight 0, and together the ranks take each sequence once."""
    lengths = [300, 20, 20, 20, 20, 20, 20, 280, 10]
    for indices in ([0, 1, 2, 3, 4, 5, 6, 7], [8, 0, 7]):  # a full step, and an epoch's short last step
        plans = [rank_micro_batches(indices, lengths, micro, 640, Ranks(r, 2)) for r in range(2)]
        assert len(plans[0]) == len(plans[1])
        taken = sorted(i for plan in plans for m in plan if m.weight for i in m.indices)
        assert taken == sorted(indices)
        assert all(m.weight in (0.0, 1.0) and m.indices for plan in plans for m in plan)


def test_a_second_trainer_into_the_same_run_is_refused(setup):
    """Two `tunewise train` into one output_dir (say, a launch accelerate did not join up) would mix two
    runs; the second is refused, naming the directory and the holder."""
    out = setup.root / "locked"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tunewise.files import hold_lock; "
                               f"h = hold_lock(Path({str(out / '.lock')!r}), 'x'); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TunewiseError, match=rf"output_dir {out} is in use by another process \(pid {holder.pid}\)"):
            loop.train(load_config(setup.config("locked")))
    finally:
        holder.kill()
        holder.wait()
    hold_lock(out / ".lock", "x")  # released by the OS when its holder died


def test_single_process_commands_refuse_a_launch_of_several(monkeypatch, tmp_path):
    """eval/merge/export/review/chat/quickstart under torchrun would run N whole copies into one output; refused by
    name, with the way out for a job environment that sets WORLD_SIZE everywhere; --help still works."""
    from typer.testing import CliRunner

    from tunewise.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv, name in ((["eval", "--run", str(tmp_path), "--data", "x.jsonl", "--metric", "exact_match"], "eval"),
                       (["merge", str(tmp_path), "--out", str(tmp_path / "m")], "merge"),
                       (["export", "gguf", str(tmp_path), "--out", str(tmp_path / "m.gguf")], "export gguf"),
                       (["review", "--run", str(tmp_path), "--data", "x.jsonl"], "review"),
                       (["chat", str(tmp_path), "--prompt", "hi"], "chat"),
                       (["quickstart", "--out", str(tmp_path / "q")], "quickstart")):
        result = CliRunner().invoke(app, argv)
        assert isinstance(result.exception, TunewiseError), (argv, result.output)
        message = str(result.exception)
        assert f"tunewise {name} runs in one process" in message and f"WORLD_SIZE=1 tunewise {name}" in message
    for argv in (["eval", "--help"], ["export", "gguf", "--help"], ["quickstart", "--help"]):
        result = CliRunner().invoke(app, argv)
        assert result.exit_code == 0 and "Usage" in result.output, (argv, result.output)
    monkeypatch.setenv("WORLD_SIZE", "1")
    result = CliRunner().invoke(app, ["merge", str(tmp_path), "--out", str(tmp_path / "m")])
    assert isinstance(result.exception, TunewiseError) and "not a tunewise run directory" in str(result.exception)


def test_accelerate_mixed_precision_is_set_aside_and_fp16_fsdp_refused(monkeypatch):
    """An accelerate config's fp16 would scale the loss with accelerate's own GradScaler, never unscaled
    here: the Accelerator is built with mixed_precision "no", and a note says so."""
    from accelerate.state import AcceleratorState

    from tunewise.train.session import _accelerate_precision_note, _check_sharding, make_accelerator

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    AcceleratorState._reset_state(True)
    try:
        accelerator = make_accelerator(torch.device("cpu"))
        assert accelerator.mixed_precision == "no" and accelerator.scaler is None
    finally:
        AcceleratorState._reset_state(True)
    assert "mixed_precision fp16 is not used" in _accelerate_precision_note(config())
    with pytest.raises(TunewiseError, match=r"train\.strategy fsdp with model\.dtype float16"):
        _check_sharding(Ranks(0, 2, "MULTI_GPU", "fsdp"), config(), "float16")
    _check_sharding(Ranks(0, 2, "MULTI_GPU", "ddp"), config(), "float16")  # DDP has its scaler


def test_the_quickstart_trains_one_process_per_core_pair(setup, monkeypatch):
    """quickstart.py: on a CPU with 2+ cores the example trains as 2 DDP processes (faster there, docs/
    benchmarks.md), giving the adapter one process gives (dropout 0: up to float32 summation order)."""
    from tunewise import quickstart

    config = load_config(setup.config("qs2", batch_size=4, max_steps=4))
    monkeypatch.setattr(quickstart, "pick_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(quickstart.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert quickstart.training_processes(config) == (2, 2)
    assert quickstart.training_processes(config, one_process=True) == (1, 4)  # tunewise quickstart --one-process
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's thread count, for each process
    assert quickstart.training_processes(config) == (2, 3)
    config.train.batch_size = 3  # each step's sequences could not be shared out evenly: one process
    assert quickstart.training_processes(config) == (1, 4)
    config.train.batch_size = 4
    monkeypatch.setattr(quickstart, "pick_device", lambda: torch.device("cuda", 0))
    assert quickstart.training_processes(config) == (1, 4)
    monkeypatch.setattr(quickstart, "pick_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(quickstart.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert quickstart.training_processes(config) == (1, 1)

    quickstart.train_on_cpu_cores(config, 2, 1)
    run([sys.executable, "-m", "tunewise.cli", "train", str(setup.config("qs1", batch_size=4, max_steps=4))],
        setup.root)
    manifest = json.loads((setup.root / "qs2" / "manifest.json").read_text())
    assert (manifest["world_size"], manifest["engine"]) == (2, "MULTI_CPU")
    one, two = adapter(setup.root / "qs1"), adapter(setup.root / "qs2")
    assert max(float((two[n] - one[n]).abs().max()) for n in one) < 1e-4

    odd = load_config(setup.config("qs3", batch_size=3, max_steps=4))  # refused by every rank
    with pytest.raises(TunewiseError, match=r"training stopped in its 2-process launch \(the launcher exited"):
        quickstart.train_on_cpu_cores(odd, 2, 1)
    assert not (setup.root / "qs3" / "adapter").exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_ctrl_c_stops_the_quickstarts_training_processes(setup, stop):
    """The launcher runs in its own session and its training processes in theirs: a Ctrl-C (or a kill)
    must reach them through the launcher's shutdown, or they would go on training into the run after
    the quickstart has said it was interrupted."""
    out = setup.root / f"interrupted-{stop.name}"
    # a run far longer than the test: with the default 3 epochs (45 steps) it could end before the signal
    config = setup.config(out.name, max_steps=10**4, epochs=1000)
    script = ("from tunewise import quickstart; from tunewise.config import load_config; "
              f"quickstart.train_on_cpu_cores(load_config({str(config)!r}), 2, 1)")
    with open(out.with_suffix(".err"), "w") as err:  # a file: a full pipe would stall the ranks
        parent = subprocess.Popen([sys.executable, "-c", script], cwd=setup.root, stdout=subprocess.DEVNULL,
                                  stderr=err)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file() or '"train"' not in (out / "metrics.jsonl").read_text():
            assert parent.poll() is None and time.time() < deadline, out.with_suffix(".err").read_text()
            time.sleep(0.5)
        parent.send_signal(stop)  # SIGINT: what the terminal's Ctrl-C sends the quickstart's process
        assert parent.wait(timeout=90) != 0
    finally:
        parent.kill()
    hold_lock(out / ".lock", "x")  # no trainer holds the run any more
    steps = (out / "metrics.jsonl").read_text().count('"train"')
    time.sleep(3)
    assert (out / "metrics.jsonl").read_text().count('"train"') == steps  # and none goes on writing to it
