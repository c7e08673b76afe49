"""Command line: `sa-mdrad <command> [flags]` (or `python -m sa_mdrad_jax <command>`).

  train       natural (teacher) training:  --config=configs/x.py[:arg] --config.a.b=v --workdir=DIR
  distill     adversarial training / distillation (config with a `method` block): same flags
  evaluate    robust accuracy of a checkpoint: --workdir=DIR [--attacks=clean,fgsm,pgd20,cw_inf_30,autoattack]
              (any registered attack, or a spec such as pgd:steps=50,restarts=2,loss=cw)
              [--n_points=1000] [--eps_255=8] [--batch_size=200] [--out_dir=DIR]
  sanity      S1–S11 gradient-masking checks of a checkpoint: --workdir=DIR [--n_points=1000]
              [--eps_255=8] [--budget=standard|fast|smoke] [--best] [--batch_size=200] [--out_dir=DIR]
              prints a pass/fail table, writes sanity.{json,md} (default into the workdir);
              exit code 1 if any check fails
  quickstart  offline digits demo:          [--workdir=DIR] [--config.a.b=v]
  prepare     download/prepare a dataset:   --dataset=NAME [--data_dir=DIR] [--manual_dir=DIR]
  import-torch  PyTorch state dict -> teacher workdir: --checkpoint=FILE(.pt|.pth|.safetensors)
              --model=NAME --workdir=DIR [--num_classes=10] [--width=1] [--normalize=NAME|m,m,m/s,s,s]
              [--image_size=32] [--dataset=NAME]
  export-torch  checkpoint -> PyTorch state dict: --workdir=DIR --out=FILE.safetensors

Re-running `train` with the same workdir resumes from its latest checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from absl import flags, logging
from ml_collections import config_flags

from sa_mdrad_jax import checkpoints, config as config_lib



def _define_flags(argv: list[str]) -> flags.FlagValues:
    """A fresh set of flags per invocation (so the CLI can be called repeatedly in one process)."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file, path[:arg].", lock_config=True,
                                    flag_values=fv, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the resolved config.",
                        flag_values=fv)
    flags.DEFINE_string("dataset", None, "Dataset name (prepare).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "TFDS data directory (prepare).", flag_values=fv)
    flags.DEFINE_string("manual_dir", None, "Directory holding manually downloaded files (prepare).",
                        flag_values=fv)
    flags.DEFINE_string("attacks", "clean,fgsm,pgd20,cw_inf_30,autoattack", "Attacks to run (evaluate).",
                        flag_values=fv)
    flags.DEFINE_integer("n_points", 1000, "Test points to evaluate (evaluate).", flag_values=fv)
    flags.DEFINE_float("eps_255", 8.0, "L-inf radius in 1/255 units (evaluate).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 200, "Attack batch size (evaluate).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Attack seed (evaluate).", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where evaluate / sanity write their reports "
                        "(default <workdir>/evaluation / <workdir>).",
                        flag_values=fv)
    flags.DEFINE_string("checkpoint", None, "PyTorch checkpoint to read (import-torch).", flag_values=fv)
    flags.DEFINE_string("model", None, "Zoo model name the checkpoint holds (import-torch).", flag_values=fv)
    flags.DEFINE_integer("num_classes", 10, "Classes of the checkpoint's classifier (import-torch).",
                         flag_values=fv)
    flags.DEFINE_float("width", 1.0, "Width multiplier of the zoo model (import-torch).", flag_values=fv)
    flags.DEFINE_string("normalize", "", "Input mean/std the checkpoint expects: '' (none), a name "
                        "(cifar10, ...) or 'm1,m2,m3/s1,s2,s3' (import-torch).", flag_values=fv)
    flags.DEFINE_integer("image_size", 32, "Image size the teacher is used at (import-torch).", flag_values=fv)
    flags.DEFINE_string("out", None, "The .safetensors file to write (export-torch).", flag_values=fv)
    flags.DEFINE_enum("budget", "standard", ["standard", "fast", "smoke"],
                      "Attack budget of the sanity checks: AutoAttack's standard one, a smaller one for CPU "
                      "runs, or a minimal one that only checks the wiring (sanity).",
                      flag_values=fv)
    flags.DEFINE_bool("best", False, "Check the best checkpoint instead of the latest (sanity).", flag_values=fv)
    flags.DEFINE_string("compilation_cache_dir", default_compilation_cache_dir(),
                        "JAX's persistent compilation cache: a re-run, a resumed run or the evaluation of "
                        "another checkpoint of the same architecture loads its compiled programs from here "
                        "instead of compiling them again. '' turns it off. Default: $XDG_CACHE_HOME (or "
                        "~/.cache)/sa_mdrad_jax/jax_cache.", flag_values=fv)
    flags.DEFINE_enum("log_level", "warning", ["debug", "info", "warning", "error"],
                      "absl/Orbax log level (Orbax logs every save at info).", flag_values=fv)
    return fv


FLAGS: flags.FlagValues | None = None


def default_compilation_cache_dir() -> str:
    """$XDG_CACHE_HOME/sa_mdrad_jax/jax_cache, ~/.cache/... when XDG_CACHE_HOME is unset (a local
    directory of this host: JAX's own cache, not a workdir path)."""
    from sa_mdrad_jax import paths
    root = os.environ.get("XDG_CACHE_HOME") or paths.join(paths.absolute("~"), ".cache")
    return paths.join(root, "sa_mdrad_jax", "jax_cache")


def configure_compilation_cache(directory: str) -> None:
    """Points JAX's persistent compilation cache at `directory` ('' or None: off).

    Programs that compile in under a second are not stored (JAX's default threshold)."""
    import jax
    from sa_mdrad_jax import paths
    directory = paths.absolute(directory) if directory else None   # JAX's cache takes gs:// too
    if jax.config.jax_compilation_cache_dir == directory:
        return
    jax.config.update("jax_compilation_cache_dir", directory)
    try:   # the cache binds to its directory on first use: rebind (a process calling run() twice)
        from jax._src import compilation_cache
        compilation_cache.reset_cache()
    except (ImportError, AttributeError):
        pass


def _train(argv):
    _no_positional(argv)
    from sa_mdrad_jax.train import loop
    _require("config", "workdir")
    metrics = loop.train(FLAGS.config, FLAGS.workdir)
    print(f"final: {metrics}")


def _quickstart(argv):
    _no_positional(argv)
    from sa_mdrad_jax import quickstart
    quickstart.run(FLAGS.config, FLAGS.workdir or "workdir/quickstart")


def _evaluate(argv):
    _no_positional(argv)
    from sa_mdrad_jax.evaluate import robustness
    _require("workdir")
    from sa_mdrad_jax.attacks import split_list
    names = split_list(FLAGS.attacks)   # names or specs ('pgd:steps=50,restarts=2,loss=cw') of registered attacks
    if not 0 < FLAGS.eps_255 <= 255:
        raise UsageError(f"--eps_255 must be in (0, 255]; got {FLAGS.eps_255}.")
    for flag in ("n_points", "batch_size"):
        if getattr(FLAGS, flag) < 1:
            raise UsageError(f"--{flag} must be a positive integer; got {getattr(FLAGS, flag)}.")
    config_lib.check_attack_names(names, "--attacks")   # every name, before the checkpoint is loaded
    from sa_mdrad_jax import paths
    out_dir = FLAGS.out_dir or paths.join(FLAGS.workdir, "evaluation")
    record = robustness.evaluate_checkpoint(FLAGS.workdir, attack_names=names, n_points=FLAGS.n_points,
                                            eps=FLAGS.eps_255 / 255, batch_size=FLAGS.batch_size,
                                            seed=FLAGS.seed, data_dir=FLAGS.data_dir, out_dir=out_dir,
                                            log=lambda m: print(m, file=sys.stderr, flush=True))
    label = f"{record['model']['name']} (step {record['step']})"
    print(robustness.markdown_table({label: record}))
    print(f"wrote {out_dir}/evaluation.{{json,md}} and robust_accuracy_vs_eps.png")


def _sanity(argv):
    _no_positional(argv)
    from sa_mdrad_jax.evaluate import sanity
    _require("workdir")
    if not 0 < FLAGS.eps_255 <= 255:
        raise UsageError(f"--eps_255 must be in (0, 255]; got {FLAGS.eps_255}.")
    if FLAGS.n_points < 2:
        raise UsageError(f"--n_points must be at least 2 (S2 changes batch companions), got {FLAGS.n_points}.")
    out_dir = FLAGS.out_dir or FLAGS.workdir
    record = sanity.sanity_check_checkpoint(FLAGS.workdir, n_points=FLAGS.n_points, eps=FLAGS.eps_255 / 255,
                                            batch_size=FLAGS.batch_size, seed=FLAGS.seed, budget=FLAGS.budget,
                                            best=FLAGS.best, data_dir=FLAGS.data_dir, out_dir=out_dir)
    print(sanity.markdown_table(record["checks"], sanity.record_header(record)))
    print(f"wrote {out_dir}/sanity.{{json,md}}")
    if not record["passed"]:
        raise SystemExit(1)


def _prepare(argv):
    _no_positional(argv)
    from sa_mdrad_jax import data
    _require("dataset")
    data.prepare(FLAGS.dataset, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir)
    print(f"prepared {FLAGS.dataset} in {FLAGS.data_dir or 'the TFDS default data_dir'}")


def _import_torch(argv):
    _no_positional(argv)
    from sa_mdrad_jax import interop, models
    _require("checkpoint", "model", "workdir")
    try:  # option errors are usage errors; the file is only read once they are fine
        normalize = interop.parse_normalize(FLAGS.normalize)
        models.get_model(FLAGS.model, num_classes=FLAGS.num_classes, width=FLAGS.width, normalize=normalize)
    except ValueError as e:
        raise UsageError(str(e)) from None
    interop.import_torch(FLAGS.checkpoint, FLAGS.workdir, model=FLAGS.model, num_classes=FLAGS.num_classes,
                         width=FLAGS.width, normalize=normalize, image_size=FLAGS.image_size,
                         dataset=FLAGS.dataset)
    print(f"imported {FLAGS.checkpoint} as {FLAGS.model} (width {FLAGS.width}) into {FLAGS.workdir}")


def _export_torch(argv):
    _no_positional(argv)
    from sa_mdrad_jax import interop
    _require("workdir", "out")
    if not FLAGS.out.endswith(".safetensors"):
        raise UsageError(f"--out must name a .safetensors file, got {FLAGS.out!r}.")
    state_dict = interop.export_torch(FLAGS.workdir, FLAGS.out)
    print(f"wrote {len(state_dict)} tensors to {FLAGS.out}")


def _distill(argv):
    if FLAGS.config is not None and "method" not in FLAGS.config:
        raise UsageError("distill needs a config with a 'method' block (e.g. configs/sa_mdrad_digits.py).")
    _train(argv)


COMMANDS = {"train": _train, "distill": _distill, "evaluate": _evaluate, "sanity": _sanity,
            "quickstart": _quickstart,
            "prepare": _prepare, "import-torch": _import_torch, "export-torch": _export_torch}


class UsageError(ValueError):
    pass


def _no_positional(argv):
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


def _require(*names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) is None]
    if missing:
        raise UsageError(f"Missing required flag(s): {', '.join(missing)}")


def _usage() -> str:
    return (__doc__ or "").strip()


def _errors():
    from sa_mdrad_jax import data, workdir_lock
    from sa_mdrad_jax.train.loop import NonFiniteLossError
    from sa_mdrad_jax.interop import TorchCheckpointError
    return (config_lib.ConfigError, data.DatasetNotFoundError, checkpoints.CheckpointMismatchError,
            checkpoints.CheckpointCorruptError, workdir_lock.WorkdirLockedError, TorchCheckpointError,
            NonFiniteLossError, FileNotFoundError, ImportError)


def _startup_sigterm(signum, frame):
    print("SIGTERM during start-up: nothing was trained or saved; exiting.", file=sys.stderr, flush=True)
    raise SystemExit(143)


def run(argv: list[str] | None = None) -> None:
    # Until the training loop installs its own handler (which checkpoints), a SIGTERM exits cleanly.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _startup_sigterm) if in_main else None
    try:
        _run(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else None
        msg = f"Unknown command {given!r}. " if given and not given.startswith("-") else ""
        print(f"{msg}Commands: {', '.join(COMMANDS)}.\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    command, rest = argv[1], [argv[0]] + argv[2:]
    if command == "quickstart" and not any(a.startswith("--config=") for a in rest):
        from sa_mdrad_jax import quickstart
        rest.insert(1, f"--config={quickstart.__file__}")
    try:
        config_arg = next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), None)
        if config_arg is not None:
            config_lib.check_override_args(config_lib.load_config_file(config_arg), rest)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)

    global FLAGS
    FLAGS = _define_flags(rest)
    try:
        remaining = FLAGS(rest)
    except (flags.Error, config_lib.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if not flags.FLAGS.is_parsed():  # absl's own flags: defaults (avoids "logging before flag parsing")
        flags.FLAGS.mark_as_parsed()
    logging.set_verbosity(FLAGS.log_level)
    configure_compilation_cache(FLAGS.compilation_cache_dir)
    try:
        COMMANDS[command](remaining)
    except UsageError as e:
        print(f"error: {e}\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    except _errors() as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    run()
