"""Benchmark P6: the CNN's training-step FLOP rate as a fraction of the machine's fp32 GEMM peak.

Target: at batch 512 the default CNN run (``runs.cnn``) trains at >= 40 % of the FLOP rate that
TensorFlow's own fp32 matrix multiply reaches on this machine.

* ``gemm_peak``: the measured fp32 ``tf.linalg.matmul`` rate (default thread pools, all cores).
* ``cnn_step_flops``: FLOPs of one training step, counted analytically from the layer shapes.
* ``cnn_step_rate``: the pipeline's CNN, built and compiled as the train stage does, timed in
  steady state at batch 512; FLOPs/step, seconds/step, GFLOP/s and the fraction of the peak.
* ``profiler_step_flops``: TensorFlow's profiler count of the same step, a cross-check only.

Usage (from the repository root, after ``prepare``)::

    python benchmarks/flops.py [--params params.yaml] [--repeats N] [--json FILE] [--explore]

The default run measures the GEMM peak, the CNN with op determinism (as ``train`` runs it) and,
in a fresh process, the CNN without it. ``--explore`` adds the options that could raise the
fraction without changing what the model computes (XLA, ``steps_per_execution``, oneDNN off,
thread pools) and, for context, wider CNNs and the pipeline's own batch size of 64. Each of these
runs in a fresh process, since op determinism, oneDNN and the thread pools are fixed per process.
Exit status 0 whenever the measurement completes; the verdict is in the output and in the JSON:
``met``, and ``machine_shared`` when other processes' load during the GEMM makes it unreliable
(the all-core peak drops much more than the CNN's rate, so the fraction reads too high).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

TARGET_FRACTION = 0.40
GEMM_SIZES = (1024, 2048, 3072)
GEMM_SECONDS_PER_REPEAT = 0.4
SHARED_LOAD_CORES = 0.2  # other load during the GEMM above which the verdict is flagged
STEPS_PER_REPEAT = 64  # training steps per timed epoch: 4 compiled calls of the run's 16 steps


class OtherLoad:
    """How many cores, on average, everything but this process kept busy since construction.

    From the machine-wide busy time in /proc/stat (user, nice, system, irq, softirq and steal:
    time the hypervisor gave to other guests) minus this process's own CPU time, over wall time.
    On a machine without /proc/stat ``cores()`` is None.
    """

    def __init__(self) -> None:
        self._start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def cores(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        wall, busy, own = (e - s for e, s in zip(end, self._start, strict=True))
        return max(0.0, (busy - own) / wall)


def gemm_peak(repeats: int = 5, n: int | None = None) -> dict[str, Any]:
    """The machine's measured fp32 matmul rate with TensorFlow: the "peak" P6 compares with.

    Multiplies square float32 matrices with ``tf.linalg.matmul`` on TensorFlow's default thread
    pools (all cores; oneDNN as configured by the environment), 2·n³ FLOPs per product. For each
    size, one warm-up product also calibrates how many products make one repeat last about
    ``GEMM_SECONDS_PER_REPEAT`` s; then ``repeats`` repeats are timed. Without ``n``, the sizes in
    ``GEMM_SIZES`` are all measured and the one with the highest *median* rate is the peak: the
    best size is what "the machine's GEMM peak" means, and its median (not its single fastest
    repeat) keeps one lucky repeat on a shared machine from inflating it.

    The rate needs every core: when other processes keep a core busy, the thread that shares it
    holds up each product, and the "peak" comes out low (on the 2-core development machine:
    ~210 GFLOP/s with both cores free, 65-135 with one core busy, below one thread's ~108).
    ``other_load_cores`` says how much other load there was (see ``OtherLoad``).

    Returns ``n``, ``repeats``, ``matmuls_per_repeat``, ``gflops`` (median), ``gflops_min``,
    ``gflops_max`` for the peak size, ``sizes``: the same figures for every size measured, and
    ``other_load_cores``.
    """
    import tensorflow as tf

    sizes = (n,) if n is not None else GEMM_SIZES
    results = []
    load = OtherLoad()
    for size in sizes:
        a = tf.random.stateless_normal((size, size), seed=(1, 2))
        b = tf.random.stateless_normal((size, size), seed=(3, 4))
        started = time.perf_counter()
        float(tf.linalg.matmul(a, b)[0, 0])  # warm-up: thread pools, oneDNN primitives
        per_matmul = time.perf_counter() - started
        count = max(1, round(GEMM_SECONDS_PER_REPEAT / per_matmul))
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(count):
                product = tf.linalg.matmul(a, b)
            float(product[0, 0])
            rates.append(2 * size**3 * count / (time.perf_counter() - started) / 1e9)
        results.append(
            {
                "n": size,
                "repeats": repeats,
                "matmuls_per_repeat": count,
                "gflops": statistics.median(rates),
                "gflops_min": min(rates),
                "gflops_max": max(rates),
            }
        )
    best = max(results, key=lambda r: r["gflops"])
    return {**best, "sizes": results, "other_load_cores": load.cores()}


def cnn_step_flops(model: keras.Model, batch: int) -> int:
    """FLOPs of one training step of ``model`` at ``batch``, counted from the layer shapes.

    Counts the multiply-adds (2 FLOPs each) of the layers that hold nearly all of a CNN's work:
    ``Conv1D``/``Conv2D``/``Conv3D`` (forward per sample 2·H_out·W_out·k_h·k_w·C_in·C_out / groups)
    and ``Dense`` (2·in·out per output row). In general forward = 2 · (output elements per sample)
    · (kernel elements per output channel), which covers strides, padding, dilation and groups.

    A training step is the forward pass plus, per layer, the gradient with respect to its weights
    (if trainable) and with respect to its input (only if a trainable layer lies upstream: the
    first layer's input gradient is never needed), each costing as much as the forward pass; so
    3x forward for inner layers and 2x for the first. Not counted: biases, activations, pooling,
    dropout, the loss, batch normalisation, the L2 penalty and the optimizer update, which are
    elementwise (memory-bound and well under 1 % of the FLOPs for the default CNN).

    The model must be built (functional or Sequential). Raises ``ValueError`` for a layer with
    trainable weights this counter does not know (other than batch normalisation), so the count
    never silently leaves out a layer's matrix work.
    """
    import keras

    counted = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)
    elementwise = (keras.layers.BatchNormalization,)
    upstream_trainable: dict[int, bool] = {}  # id(layer) -> a trainable layer feeds its input
    total = 0
    for layer in model.layers:
        parents = [
            parent.operation for call in layer._inbound_nodes for parent in call.parent_nodes
        ]
        needs_input_grad = any(
            bool(p.trainable_weights) or upstream_trainable.get(id(p), False) for p in parents
        )
        upstream_trainable[id(layer)] = needs_input_grad
        if isinstance(layer, counted):
            per_output = math.prod(int(d) for d in layer.kernel.shape[:-1])
            outputs = math.prod(int(d) for d in layer.output.shape[1:])
            passes = 1 + int(bool(layer.trainable_weights)) + int(needs_input_grad)
            total += passes * 2 * outputs * per_output * batch
        elif layer.trainable_weights and not isinstance(layer, elementwise):
            raise ValueError(
                f"cnn_step_flops: cannot count layer {layer.name!r} ({type(layer).__name__})"
            )
    return total


def profiler_step_flops(model: keras.Model, batch: int) -> int:
    """TensorFlow's profiler count of the Conv/MatMul FLOPs of one training step (cross-check).

    Traces forward pass, compiled loss and gradients of the compiled ``model`` as one graph and
    lets ``tf.compat.v1.profiler`` count its convolution and matmul ops (integer class labels, as
    for the digits CNN). The traced graph also holds the first layer's input gradient, which
    TensorFlow's gradient functions always emit though nothing uses it, so this exceeds
    ``cnn_step_flops`` by that layer's forward FLOPs.
    """
    import tensorflow as tf

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return tape.gradient(loss, model.trainable_variables)

    x_spec = tf.TensorSpec((batch, *model.input_shape[1:]), tf.float32)
    graph = step.get_concrete_function(x_spec, tf.TensorSpec((batch,), tf.int64)).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    options["account_type_regexes"] = ["Conv2D.*", "Conv3D.*", "MatMul", "BatchMatMul.*"]
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


def cnn_step_rate(
    params_path: str | Path = "params.yaml",
    batch: int = 512,
    repeats: int = 5,
    *,
    peak_gflops: float | None = None,
    deterministic: bool = True,
    jit_compile: bool = False,
    steps_per_execution: int | None = None,
    filters: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Steady-state training-step rate of the pipeline's CNN run, against the GEMM peak.

    Builds ``runs.cnn`` exactly as the train stage does: ``deterministic_ops()`` first (unless
    ``deterministic=False``), the train seed, the model from its spec and ``compile_model``, so
    with the run's ``train.steps_per_execution`` (Keras resolves ``jit_compile="auto"`` to no XLA
    on a CPU-only machine). Data: the run's prepared training split, cycled to
    ``STEPS_PER_REPEAT`` batches of ``batch`` (FLOPs do not depend on the values; the split has
    only 1167 samples).

    Timing uses ``model.fit`` (shuffled, ``verbose=0``), the call the pipeline trains with, so a
    step includes everything the pipeline's step does: the tf.data batch, forward, backward,
    Adam update and metrics. One warm-up epoch traces the step; then each of ``repeats`` epochs
    is one sample: the time from its first to its last end-of-batch callback divided by the steps
    in between, which leaves out per-epoch set-up. The callback reads the loss, so it waits for
    each compiled call (one per ``steps_per_execution`` steps) to finish. ``peak_gflops``
    defaults to ``gemm_peak(repeats)["gflops"]``.

    The other keyword options exist to measure alternatives (``--explore``), not the P6 figure:
    ``jit_compile`` (XLA; Keras disables it while op determinism is on), ``steps_per_execution``
    (instead of the run's) and ``filters`` (a different conv width than params.yaml's).

    Returns ``batch``, ``filters``, ``flops_per_step``, ``seconds_per_step`` (median),
    ``seconds_per_step_min``/``_max``, ``gflops`` (FLOPs/step over the median step),
    ``peak_gflops``, ``fraction_of_peak``, the options used, ``steps_timed`` and
    ``other_load_cores`` (during the timed epochs).
    """
    if deterministic:
        from deepfit.stages._cli import deterministic_ops

        deterministic_ops()
    if peak_gflops is None:
        peak_gflops = gemm_peak(repeats)["gflops"]
    model, train, filters = pipeline_cnn(params_path, filters, jit_compile, steps_per_execution)
    timing = _time_steps(model, train, batch, repeats)
    flops = cnn_step_flops(model, batch)
    return {
        "batch": batch,
        "filters": filters,
        "flops_per_step": flops,
        **timing,
        "gflops": flops / timing["seconds_per_step"] / 1e9,
        "peak_gflops": peak_gflops,
        "fraction_of_peak": flops / timing["seconds_per_step"] / 1e9 / peak_gflops,
        "deterministic": deterministic,
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": model.steps_per_execution,
    }


def pipeline_cnn(
    params_path: str | Path,
    filters: Sequence[int] | None = None,
    jit_compile: bool = False,
    steps_per_execution: int | None = None,
) -> tuple[keras.Model, tuple[Any, Any], list[int]]:
    """The ``runs.cnn`` model built and compiled as the train stage does (train seed, spec,
    ``compile_model``), its prepared training split and its conv filters."""
    import keras

    from deepfit.config import load_params
    from deepfit.data import load_prepared
    from deepfit.models import get_spec
    from deepfit.train.loop import compile_model

    params = load_params(params_path)
    run = params.run("cnn")
    arch = run.arch if filters is None else run.arch.model_copy(update={"filters": list(filters)})
    data = load_prepared(Path("data/prepared") / run.dataset)

    keras.utils.set_random_seed(params.seeds.train)
    model = get_spec(run.model).build(arch, data.spec)
    steps = -(-len(data.train[0]) // run.train.batch_size)
    compile_model(model, data.spec, run.train, steps, generative=False)
    model.jit_compile = jit_compile
    if steps_per_execution is not None:
        model.steps_per_execution = steps_per_execution
    return model, data.train, list(arch.filters)


def _time_steps(
    model: keras.Model, train: tuple[Any, Any], batch: int, repeats: int
) -> dict[str, Any]:
    """Seconds per training step of ``model.fit`` on ``train`` cycled to ``STEPS_PER_REPEAT``
    batches: one warm-up epoch (tracing), then ``repeats`` timed epochs."""
    import numpy as np

    per_call = model.steps_per_execution
    if STEPS_PER_REPEAT % per_call or STEPS_PER_REPEAT // per_call < 2:
        raise ValueError(f"steps_per_execution must divide {STEPS_PER_REPEAT // 2}")
    x, y = train
    pick = np.arange(batch * STEPS_PER_REPEAT) % len(x)
    timer = _step_timer(per_call)
    model.fit(x[pick], y[pick], batch_size=batch, epochs=1, verbose=0)  # warm-up: tracing
    load = OtherLoad()
    model.fit(x[pick], y[pick], batch_size=batch, epochs=repeats, verbose=0, callbacks=[timer])
    return {
        "seconds_per_step": statistics.median(timer.seconds_per_step),
        "seconds_per_step_min": min(timer.seconds_per_step),
        "seconds_per_step_max": max(timer.seconds_per_step),
        "steps_timed": repeats * (STEPS_PER_REPEAT - per_call),
        "other_load_cores": load.cores(),
    }


def _step_timer(steps_per_execution: int) -> Any:
    """A Keras callback whose ``seconds_per_step`` gets, per epoch, the mean seconds per step
    between the epoch's first and last end of a compiled call (``steps_per_execution`` steps)."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds_per_step: list[float] = []
            self._ends: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._ends = []

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            float((logs or {})["loss"])  # waits for the compiled call to finish
            self._ends.append(time.perf_counter())

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            steps = (len(self._ends) - 1) * steps_per_execution
            self.seconds_per_step.append((self._ends[-1] - self._ends[0]) / steps)

    return StepTimer()


@dataclass(frozen=True)
class Variant:
    """One CNN measurement in a fresh process: CLI options and environment variables."""

    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    own_peak: bool = False  # measure the GEMM peak under the same environment too


NON_DETERMINISTIC = Variant("no deterministic_ops", ("--no-deterministic",))
EXPLORE = (
    Variant("XLA (jit_compile; no determinism)", ("--no-deterministic", "--jit-compile")),
    Variant("steps_per_execution=1", ("--steps-per-execution", "1")),
    Variant("steps_per_execution=32", ("--steps-per-execution", "32")),
    Variant("oneDNN off", env={"TF_ENABLE_ONEDNN_OPTS": "0"}, own_peak=True),
    Variant("1 intra-op thread", env={"TF_NUM_INTRAOP_THREADS": "1"}, own_peak=True),
    Variant("1 inter-op thread", env={"TF_NUM_INTEROP_THREADS": "1"}),
    Variant("filters 64,128 (wider CNN)", ("--filters", "64,128")),
    Variant("filters 128,256 (wider CNN)", ("--filters", "128,256")),
    Variant("batch 64 (pipeline's batch)", ("--batch", "64")),
)


def run_variant(variant: Variant, args: argparse.Namespace, peak_gflops: float) -> dict[str, Any]:
    """Run ``cnn_step_rate`` for ``variant`` in a fresh Python process with the CLI's params,
    repeats and batch (unless the variant sets its own); return its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--single",
            "--params",
            args.params,
            "--repeats",
            str(args.repeats),
            "--batch",
            str(args.batch),
            "--json",
            str(out),
            *variant.args,
        ]
        if not variant.own_peak:
            command += ["--peak", repr(peak_gflops)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **variant.env}
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        result: dict[str, Any] = json.loads(out.read_text())["cnn"]
    return {"variant": variant.name, **result}


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(gemm: dict[str, Any] | None, rows: list[dict[str, Any]]) -> str:
    """Plain-text report: the GEMM sizes measured, then one line per CNN measurement with its
    steps per compiled call (spe) and the other processes' load (cores) while it was timed."""
    lines = []
    if gemm is not None:
        lines.append("fp32 GEMM (tf.linalg.matmul, default thread pools), GFLOP/s per size:")
        lines += [
            f"  n={s['n']:5d}  median {s['gflops']:6.1f}  [{s['gflops_min']:.1f}-"
            f"{s['gflops_max']:.1f}]  ({s['repeats']} x {s['matmuls_per_repeat']} matmul(s))"
            for s in gemm["sizes"]
        ]
        lines.append(
            f"  peak = n={gemm['n']}: {gemm['gflops']:.1f} GFLOP/s (median); "
            f"other load {_cores(gemm['other_load_cores'])} cores"
        )
    header = (
        f"{'CNN training step':36s} {'batch':>5s} {'MFLOP/step':>10s}"
        f" {'spe':>3s} {'ms/step med [min-max]':>22s} {'GFLOP/s':>7s} {'peak':>6s} {'% peak':>6s}"
        f" {'load':>5s}"
    )
    lines += ["", header, "-" * len(header)]
    for r in rows:
        times = (
            f"{r['seconds_per_step'] * 1e3:6.1f} [{r['seconds_per_step_min'] * 1e3:.1f}-"
            f"{r['seconds_per_step_max'] * 1e3:.1f}]"
        )
        lines.append(
            f"{r['variant']:36s} {r['batch']:5d} {r['flops_per_step'] / 1e6:10.1f}"
            f" {r['steps_per_execution']:3d} {times:>22s}"
            f" {r['gflops']:7.1f} {r['peak_gflops']:6.1f} {100 * r['fraction_of_peak']:5.1f}%"
            f" {_cores(r['other_load_cores']):>5s}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    cli.add_argument("--repeats", type=int, default=5, help="timed repeats (default: %(default)s)")
    cli.add_argument("--batch", type=int, default=512, help="batch size (default: %(default)s)")
    cli.add_argument("--json", type=Path, help="also write the results to this JSON file")
    cli.add_argument("--explore", action="store_true", help="also measure the variants")
    cli.add_argument("--single", action="store_true", help="one CNN measurement, nothing else")
    cli.add_argument("--peak", type=float, help="use this GEMM peak (GFLOP/s), do not measure")
    cli.add_argument("--no-deterministic", dest="deterministic", action="store_false")
    cli.add_argument("--jit-compile", action="store_true")
    cli.add_argument("--steps-per-execution", type=int, help="instead of the run's")
    cli.add_argument("--filters", type=lambda s: [int(f) for f in s.split(",")])
    return cli.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    gemm = None if args.peak is not None else gemm_peak(args.repeats)
    peak = args.peak if gemm is None else gemm["gflops"]
    cnn = cnn_step_rate(
        args.params,
        args.batch,
        args.repeats,
        peak_gflops=peak,
        deterministic=args.deterministic,
        jit_compile=args.jit_compile,
        steps_per_execution=args.steps_per_execution,
        filters=args.filters,
    )
    result: dict[str, Any] = {"gemm": gemm, "cnn": cnn}
    label = "this configuration" if args.single else "pipeline (deterministic_ops)"
    rows = [{"variant": label, **cnn}]
    if not args.single:
        variants = [NON_DETERMINISTIC, *(EXPLORE if args.explore else ())]
        rows += [run_variant(v, args, peak) for v in variants]
        result["variants"] = rows[1:]
        result["profiler_flops_per_step"] = _profiler_flops(args.params, args.batch)
        result["met"] = cnn["fraction_of_peak"] >= TARGET_FRACTION
        result["machine_shared"] = (
            gemm is not None and (gemm["other_load_cores"] or 0.0) > SHARED_LOAD_CORES
        )
        result["seconds"] = time.perf_counter() - started
    print(table(gemm, rows))
    if not args.single:
        print(verdict(result, args.batch))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def verdict(result: dict[str, Any], batch: int) -> str:
    """The FLOP counts, P6's figure against its target and a warning if the machine was shared."""
    cnn, counted = result["cnn"], result["profiler_flops_per_step"]
    lines = [
        f"\nFLOPs/step: analytic {cnn['flops_per_step']:,}; TF profiler (Conv/MatMul ops of "
        "the traced step, incl. the unused first-layer input gradient): "
        + (f"{counted:,}" if isinstance(counted, int) else counted),
        f"P6: {100 * cnn['fraction_of_peak']:.1f}% of the GEMM peak at batch {batch} "
        f"(target >= {100 * TARGET_FRACTION:.0f}%): {'met' if result['met'] else 'NOT met'}"
        f"; {result['seconds']:.0f} s in all",
    ]
    if result["machine_shared"]:
        lines.append(
            f"WARNING: other processes kept {result['gemm']['other_load_cores']:.2f} cores busy "
            "during the GEMM measurement, so the all-core peak is understated and the fraction "
            "overstated; rerun on an idle machine for the P6 figure."
        )
    return "\n".join(lines)


def _profiler_flops(params_path: str, batch: int) -> int | str:
    """``profiler_step_flops`` of the default CNN, or why it could not be counted."""
    model, _, _ = pipeline_cnn(params_path)
    try:
        return profiler_step_flops(model, batch)
    except Exception as exc:  # a cross-check only: never fail the benchmark over it
        return f"n/a ({type(exc).__name__}: {exc})"


if __name__ == "__main__":
    sys.exit(main())
