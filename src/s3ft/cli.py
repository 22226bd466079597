"""Command line: `s3ft demo`, `s3ft run CONFIG --set k=v`, one subcommand per stage, `s3ft compare`."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
from pathlib import Path
from typing import List, Optional

import typer

from .backends import backend_names
from .compare.command import CompareOptions, compare as compare_fn
from .compare.contrasts import headline
from .forgetting.lm_eval_bridge import GeneralEvalConfig
from .checks import load_checked_config
from .cost import estimate, format_estimate
from .errors import S3FTError
from .judges import get_judge, judge_names
from .methods import METHODS
from .pipeline import run_pipeline
from .strategies import STRATEGIES
from .sweep import parse_seeds, run_sweep
from .tasks import args_table, task_class, task_names

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fine-tune LLMs on their own correct answers (SSR / S3FT) so they forget less.")

CONFIGS = Path(__file__).parent / "configs"

SetOpt = typer.Option(None, "--set", help="Override a config key, e.g. --set train.lora_r=16 (repeatable).")
ForceOpt = typer.Option(False, "--force", help="Recompute artifacts made with other settings instead of stopping.")
DataDirOpt = typer.Option(None, "--data-dir", help="Local hub-schema JSONL directory (or env S3FT_DATA_DIR).")


def _fail(e: Exception) -> None:
    if os.environ.get("S3FT_DEBUG"):
        raise e
    typer.secho(f"error: {e}", fg="red", err=True)
    raise typer.Exit(2)


def _load(config: Optional[Path], overrides: Optional[List[str]], data_dir: Optional[str] = None,
          output: Optional[Path] = None):
    extra = list(overrides or [])
    if data_dir:
        extra.append(f"data.data_dir={data_dir}")
    if output:
        extra.append(f"output_dir={output}")
    return load_checked_config(config, extra)


def _run(config, overrides, data_dir, output, force, until):
    try:
        cfg = _load(config, overrides, data_dir, output)
        return run_pipeline(cfg, force=force, until=until)
    except S3FTError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished rows are saved; run the same command again to resume", err=True)
        raise typer.Exit(130)


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config (see configs/)."),
        set_: Optional[List[str]] = SetOpt, data_dir: Optional[str] = DataDirOpt,
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (overrides output_dir)."),
        force: bool = ForceOpt,
        benchmarks: Optional[str] = typer.Option(
            None, "--benchmarks", help="Then run `s3ft compare` on these general benchmarks (comma-separated)."),
        limit: Optional[str] = typer.Option(None, "--limit", help="With --benchmarks: examples per benchmark."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only estimate rows, tokens and time per stage; "
                                     "writes nothing into the run directory."),
        no_probe: bool = typer.Option(False, "--no-probe", help="With --dry-run: count tokens only, without "
                                      "loading the model to measure its speed.")):
    """Run every stage: generate, judge, paraphrase, select, train, evaluate, report."""
    if dry_run:
        try:
            typer.echo(format_estimate(estimate(_load(config, set_, data_dir, output), probe=not no_probe)))
        except S3FTError as e:
            _fail(e)
        return
    summary = _run(config, set_, data_dir, output, force, "report")
    if benchmarks and summary:
        run_dir = Path(summary["config"]["output_dir"])
        try:
            _compare(**COMPARE_DEFAULTS, run_dirs=[run_dir], benchmarks=benchmarks, limit=limit, data_dir=data_dir,
                     output=run_dir / "compare", no_general=False,
                     no_forgetting=not summary["config"]["forgetting"]["enabled"])
        except S3FTError as e:
            _fail(e)


def _stage_command(stage: str, doc: str):
    def cmd(config: Path = typer.Argument(..., help="YAML config."), set_: Optional[List[str]] = SetOpt,
            data_dir: Optional[str] = DataDirOpt,
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory."),
            force: bool = ForceOpt):
        _run(config, set_, data_dir, output, force, stage)
    cmd.__doc__ = doc + " (runs or resumes the stages before it)."
    app.command(name=stage)(cmd)


for _stage, _doc in [("data", "Load and sample the task's splits"),
                     ("generate", "Generate the base model's answers to the training queries"),
                     ("judge", "Judge the base model's answers"),
                     ("samples", "Sample best-of-k answers where the greedy one was rejected, and judge them"),
                     ("paraphrase", "Have the model paraphrase gold answers and judge the paraphrases"),
                     ("select", "Select training targets for each method"),
                     ("train", "Train one adapter per method"),
                     ("evaluate", "Evaluate base and adapters in-domain and write the report"),
                     ("forgetting", "Measure forgetting: drift from the base model, probe benchmarks, controls")]:
    _stage_command(_stage, _doc)


@app.command()
def demo(output: Path = typer.Option(Path("demo-output"), "--output", "-o", help="Where to write the run."),
         set_: Optional[List[str]] = SetOpt, force: bool = ForceOpt):
    """Offline demo: SmolLM2-135M on synthetic arithmetic, base vs SFT vs S3FT: in-domain and forgetting, CPU, minutes."""
    _run(CONFIGS / "demo.yaml", set_, None, output, force, "report")
    typer.echo(f"wrote {output / 'summary.json'} and {output / 'report.md'}")


def parse_limit(text: str | None) -> int | dict[str, int] | None:
    """`200`, or `200,truthfulqa_mc2=50` (a default and per-benchmark counts), or `mmlu=100,arc_easy=300`."""
    if text is None:
        return None
    out: dict[str, int] = {}
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, _, n = part.rpartition("=")
            out[name or "default"] = int(n)
    except ValueError:
        raise S3FTError(f"--limit {text!r}: expected N or BENCHMARK=N[,...], e.g. 200,truthfulqa_mc2=50") from None
    return out["default"] if list(out) == ["default"] else out


COMPARE_DEFAULTS = dict(seed=0, batch_size=8, device="auto", dtype="auto", max_gen_toks=None, audit_judge="auto",
                        audit_size=50, no_nll=False, cache_dir=None)
"""`s3ft compare`'s defaults, for the commands that compare after running (`run --benchmarks`, `sweep`)."""


def _compare(*, run_dirs: list[Path], benchmarks: str | None, limit: str | None, seed: int, data_dir: str | None,
             output: Path | None, no_general: bool, batch_size: int, device: str, dtype: str, max_gen_toks: int | None,
             audit_judge: str, audit_size: int, no_nll: bool, no_forgetting: bool, cache_dir: Path | None,
             contrasts: list[str] | None = None) -> Path:
    general = None
    if not no_general:
        kw = {"tasks": benchmarks} if benchmarks else {}
        general = GeneralEvalConfig(data_dir=data_dir or os.environ.get("S3FT_DATA_DIR") or None,
                                    limit=parse_limit(limit), seed=seed, batch_size=batch_size, device=device,
                                    dtype=dtype, max_gen_toks=max_gen_toks, **kw)
    if audit_judge not in ("auto", "none"):
        get_judge(audit_judge)  # unknown name: fail before any work
    opts = CompareOptions(bootstrap_seed=seed, audit_seed=seed, audit_size=audit_size, nll=not no_nll,
                          forgetting=not no_forgetting, audit_judge=None if audit_judge == "none" else audit_judge,
                          cache_dir=str(cache_dir) if cache_dir else None, contrasts=list(contrasts or []))
    out = output or Path(run_dirs[0]) / "compare"
    data = compare_fn(run_dirs, general, out, opts)
    for line, sentence in headline(data["contrasts"]):
        typer.echo(f"{line}\n  {sentence}")
    return out


@app.command()
def compare(run_dirs: List[Path] = typer.Argument(..., help="Run directories (same task and model; several = seeds)."),
            benchmarks: Optional[str] = typer.Option(
                None, "--benchmarks", help="Comma-separated general benchmarks: mmlu, truthfulqa_mc1, truthfulqa_mc2, "
                "hellaswag, winogrande, arc_challenge, arc_easy, gsm8k, ifeval."),
            limit: Optional[str] = typer.Option(None, "--limit", help="Examples per benchmark (seeded sample): N, or "
                                                "N,BENCH=M,... to set some benchmarks apart."),
            seed: int = typer.Option(0, "--seed", help="Seed of the benchmark sample, bootstrap and judge audit."),
            data_dir: Optional[str] = DataDirOpt,
            output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                  help="Output folder (default: <first run dir>/compare)."),
            no_general: bool = typer.Option(False, "--no-general", help="Skip the general benchmarks."),
            batch_size: int = typer.Option(8, "--batch-size", help="Forward-pass batch size of the general eval."),
            device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
            dtype: str = typer.Option("auto", "--dtype", help="Model dtype of the general eval: auto (fp32 on CPU), "
                                      "bfloat16, float16, float32."),
            max_gen_toks: Optional[int] = typer.Option(None, "--max-gen-toks", help="Token cap of generative "
                                                       "benchmarks (gsm8k, ifeval); default: lm-eval's."),
            audit_judge: str = typer.Option("auto", "--audit-judge",
                                            help="Second judge for the audit: a registered judge; 'none' to skip; "
                                            "'auto': one that grades the task's answers another way, or no audit "
                                            "(the report says why) where none is registered."),
            audit_size: int = typer.Option(50, "--audit-size", help="Rows re-judged by the audit."),
            no_nll: bool = typer.Option(False, "--no-nll", help="Skip the target-NLL statistic and histogram."),
            no_forgetting: bool = typer.Option(False, "--no-forgetting", help="Do not read the runs' forgetting meter."),
            cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                                     help="General-eval cache (default: <output>/cache)."),
            contrast: Optional[List[str]] = typer.Option(None, "--contrast", help="Also contrast method A with B, "
                                                         "e.g. --contrast s3ft-ssr (repeatable); every method is "
                                                         "contrasted with sft anyway.")):
    """Compare base and fine-tuned models: in-domain gains vs forgetting, with CIs (seeds pooled)."""
    options = dict(locals())  # every option, by name
    options["contrasts"] = options.pop("contrast")
    try:
        out = _compare(**options)
    except S3FTError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished evaluations are cached; run the same command again to resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'compare.json'}")


@app.command()
def sweep(config: Path = typer.Argument(..., help="YAML config."),
          seeds: str = typer.Option("0,1,2", "--seeds", help="Training seeds (train.seed), comma-separated."),
          set_: Optional[List[str]] = SetOpt, data_dir: Optional[str] = DataDirOpt,
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="Root folder: one seed<N>/ per seed."),
          force: bool = ForceOpt,
          benchmarks: Optional[str] = typer.Option(None, "--benchmarks", help="Then compare on these general "
                                                   "benchmarks too (default: the forgetting meter and in-domain only)."),
          limit: Optional[str] = typer.Option(None, "--limit", help="With --benchmarks: examples per benchmark.")):
    """Run the pipeline per training seed (seed-independent stages computed once), then compare them pooled."""
    try:
        cfg_overrides = list(set_ or []) + ([f"data.data_dir={data_dir}"] if data_dir else []) + \
            ([f"output_dir={output}"] if output else [])
        dirs = run_sweep(config, cfg_overrides, parse_seeds(seeds), force)
        out = _compare(**COMPARE_DEFAULTS, run_dirs=dirs, benchmarks=benchmarks, limit=limit, data_dir=data_dir,
                       output=dirs[0].parent / "compare", no_general=benchmarks is None, no_forgetting=False)
    except S3FTError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished rows are saved; run the same command again to resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"wrote {out / 'report.html'} ({len(dirs)} seeds pooled)")


@app.command()
def tasks(name: Optional[str] = typer.Argument(None, help="A task: print its answer type, judge and options.")):
    """List registered tasks, judges, strategies, methods and backends; with NAME, one task's options."""
    if name is not None:
        try:
            typer.echo(describe_task(name))
        except S3FTError as e:
            _fail(e)
        return
    typer.echo("tasks:      " + ", ".join(task_names()) + "  (`s3ft tasks NAME`: a task's options)")
    typer.echo("judges:     " + ", ".join(judge_names()))
    typer.echo("strategies: " + ", ".join(STRATEGIES))
    typer.echo("methods:    " + ", ".join([*STRATEGIES, *METHODS]) + " (strategies, and methods with their own trainer)")
    typer.echo("backends:   " + ", ".join(backend_names()))


def describe_task(name: str) -> str:
    """A task's summary, answer type, default judge and options (name, type, default, docstring)."""
    cls = task_class(name)
    doc = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().split("\n\n")[0]
    answer = cls.answer_type or "set by data.task_args.answer_type (number, short, free, code)"
    judge = cls.judge if cls.answer_type else "follows the answer type (number: math, short: qa, free: llm, code: code)"
    lines = [f"task {name}: {' '.join(doc.split())}", f"answer type: {answer}", f"judge: {judge} (judge.name overrides it)",
             "options (data.task_args):" if dataclasses.fields(cls.args_type) else "options: none"]
    for key, tp, default, text in args_table(cls.args_type):
        lines.append(f"  {key}: {tp} = {default}")
        lines += [f"      {line}" for line in textwrap.wrap(text, 96)]
    return "\n".join(lines)


config_app = typer.Typer(no_args_is_help=True, help="See a config: resolved with where each value came from "
                         "(show), or every key documented (schema).")
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(config: Path = typer.Argument(..., help="YAML config."), set_: Optional[List[str]] = SetOpt,
                data_dir: Optional[str] = DataDirOpt,
                output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory.")):
    """Print the resolved config as YAML, each value with where it came from (file:line, --set, env, default)."""
    from .config_docs import show
    flags = {**({f"data.data_dir={data_dir}": "--data-dir"} if data_dir else {}),
             **({f"output_dir={output}": "--output"} if output else {})}
    try:
        typer.echo(show(config, [*(set_ or []), *flags], flags), nl=False)
    except S3FTError as e:
        _fail(e)


@config_app.command("schema")
def config_schema():
    """Print every config key with its type, default and docstring (Markdown; docs/config.md is this output)."""
    from .config_docs import render_schema
    typer.echo(render_schema(), nl=False)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
