"""Human-readable output. Rich for headers and tables; the tree is built as plain lines
(styled only on a terminal) so files with tens of thousands of datasets print fast."""

from __future__ import annotations

import re
import sys

from wtransplant.reading.h5io import fmt_bytes
from wtransplant.reading.inspecting import InspectReport, match_filter
from wtransplant.safety.text import markup, neutral

MAX_ATTR_CHARS = 100


def _console():
    from rich.console import Console

    class SafeConsole(Console):
        """Control characters in any printed string are shown escaped (strings from files
        reach most lines); markup in file strings is escaped where they are printed."""

        def print(self, *objects, **kw):
            objects = tuple(neutral(o, keep_newlines=True) if isinstance(o, str) else o
                            for o in objects)
            return super().print(*objects, **kw)

    return SafeConsole(highlight=False, soft_wrap=True)


#: the markup tags this module writes (user text is printed with markup=False or escaped)
_TAGS = re.compile(r"(?<!\\)(?:\[/\]|\[/?(?:bold green|bold red|bold blue|bold|yellow|green|red|dim)\])")
#: the control characters rich's Text drops (BEL, BS, VT, FF, CR)
_CONTROL = str.maketrans("", "", "\x07\x08\x0b\x0c\x0d")


class PlainConsole:
    """What ``inspect`` needs of rich's Console when stdout is not a terminal (a pipe, a
    file): plain lines, markup tags dropped, no import of rich (a fifth of a small
    inspect's own start-up)."""

    is_terminal = False

    def print(self, text="", *, markup: bool = True, end: str = "\n") -> None:
        if not isinstance(text, str):  # a rich renderable (a table): rich draws it
            _console().print(text, end=end)
            return
        if markup:  # our own tags dropped; file strings were escaped with markup()
            text = _TAGS.sub("", text).replace("\\[", "[")
        sys.stdout.write(neutral(text, keep_newlines=True).translate(_CONTROL) + end)


def _inspect_console():
    return _console() if sys.stdout.isatty() else PlainConsole()


def plain_table(title: str, columns: list[str], rows: list[list[str]],
                right: tuple = ()) -> str:
    """A table as aligned text lines (cells may hold several lines)."""
    cells = [[str(c).split("\n") for c in r] for r in rows]
    widths = [max([len(h)] + [len(x) for r in cells for x in r[i]])
              for i, h in enumerate(columns)]

    def fmt(parts):
        return "  ".join((p.rjust(w) if i in right else p.ljust(w))
                         for i, (p, w) in enumerate(zip(parts, widths))).rstrip()

    out = [title, fmt(columns), fmt(["-" * w for w in widths])]
    for r in cells:
        for k in range(max(len(c) for c in r)):
            out.append(fmt([c[k] if k < len(c) else "" for c in r]))
    return "\n".join(out)


def short(v, n: int = MAX_ATTR_CHARS) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _shape(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def tree_lines(report: InspectReport, pattern: str | None, depth: int | None) -> list[tuple]:
    """(indent, text, style) lines of the file tree."""
    tree = report.tree
    tensors = {t.path: t for t in report.tensors}
    stats = report.stats or {}
    keep: set[str] | None = None
    if pattern:
        keep = set()
        for p in list(tree.datasets) + list(tree.links):
            if match_filter(p, pattern):
                keep.add(p)
                parts = p.split("/")
                for i in range(1, len(parts)):
                    keep.add("/".join(parts[:i]) or "/")
    out: list[tuple] = []

    def node_line(path: str, prefix: str, last: bool, level: int):
        name = path.rsplit("/", 1)[-1]
        branch = prefix + ("└── " if last else "├── ")
        child_prefix = prefix + ("    " if last else "│   ")
        if path in tree.groups:
            g = tree.groups[path]
            alias = f"  (hard link to {g.alias_of})" if g.alias_of else ""
            kids = tree.children(path)
            if keep is not None:
                kids = [k for k in kids if k in keep]
            if depth is not None and level >= depth and kids:
                nd = sum(1 for p in tree.datasets if p.startswith(path + "/"))
                out.append((branch, f"{name}/  … {nd} datasets below{alias}", "group"))
                return
            out.append((branch, f"{name}/{alias}", "group"))
            _attrs(g.attrs, child_prefix)
            for i, k in reversed(list(enumerate(kids))):  # iterative: any depth
                todo.append((k, child_prefix, i == len(kids) - 1, level + 1))
        elif path in tree.datasets:
            d = tree.datasets[path]
            parts = [f"{name}  {d.dtype} {_shape(d.shape)}"]
            t = tensors.get(path)
            if t is not None and t.column_major:
                parts.append(f"MATLAB {'x'.join(map(str, t.shape))}")
            if d.layout not in ("contiguous", "compact"):
                lay = d.layout
                if d.chunks:
                    lay += " " + _shape(d.chunks)
                if d.filters:
                    lay += " " + "+".join(d.filters)
                if d.sources:
                    lay += " -> " + ", ".join(d.sources)
                parts.append(lay)
            if d.nbytes >= 1024:
                parts.append(fmt_bytes(d.nbytes))
            if d.value is not None:
                parts.append(repr(short(d.value, 40)))
            if d.alias_of:
                parts.append(f"hard link to {d.alias_of}")
            s = stats.get(path)
            if s is not None:
                parts.append(_stats_text(s))
            out.append((branch, "  ".join(parts), "dataset" if d.numeric else "other"))
            _attrs(d.attrs, child_prefix)
        elif path in tree.links:
            ln = tree.links[path]
            if ln.kind == "external":
                txt = f"{name}  -> external link {ln.target_file}:{ln.target} (not followed)"
            elif ln.kind == "soft":
                state = ln.resolves_to or "dangling"
                txt = f"{name}  -> soft link {ln.target} ({state})"
            else:
                txt = f"{name}  ({ln.kind})"
            out.append((branch, txt, "link"))

    def _attrs(attrs: dict, prefix: str):
        for k, v in attrs.items():
            out.append((prefix + "  ", f"@{k} = {short(v)}", "attr"))

    out.append(("", "/", "group"))
    _attrs(tree.root_attrs, "")
    kids = tree.children("/")
    if keep is not None:
        kids = [k for k in kids if k in keep]
    todo = [(k, "", i == len(kids) - 1, 1) for i, k in reversed(list(enumerate(kids)))]
    while todo:
        node_line(*todo.pop())
    return [(p, neutral(b), k) for p, b, k in out]  # names/values from the file: escaped


def _stats_text(s) -> str:
    if s.skipped:
        return f"[stats skipped: {s.skipped}]"
    if s.min is None:
        return f"[n={s.count} nan={s.nan} inf={s.inf}]"
    bad = f" nan={s.nan} inf={s.inf}" if (s.nan or s.inf) else ""
    return f"[min {s.min:.4g} max {s.max:.4g} mean {s.mean:.4g} std {s.std:.4g}{bad}]"


STYLES = {"group": "bold blue", "dataset": "", "other": "dim", "link": "magenta",
          "attr": "dim cyan"}


def print_inspect(report: InspectReport, pattern: str | None = None,
                  depth: int | None = None) -> None:
    con = _inspect_console()
    det = report.detection
    con.print(f"[bold]{markup(report.file)}[/]  ({fmt_bytes(report.file_size)})")
    con.print(f"format: [bold green]{det.format}[/]   convention: [bold]{det.convention}[/]"
              f"   writer: {markup(det.writer or 'unknown')}")
    for ev in det.evidence:
        con.print(f"  evidence: {neutral(ev)}", markup=False)
    for w in report.warnings:
        con.print(f"  [yellow]warning:[/] {markup(w)}")
    con.print()
    lines = tree_lines(report, pattern, depth)
    if con.is_terminal:
        from rich.text import Text

        text = Text()
        for prefix, body, kind in lines:
            text.append(prefix, style="dim")
            text.append(body + "\n", style=STYLES.get(kind, ""))
        con.print(text, end="")
    else:
        sys.stdout.write("".join(f"{p}{b}\n" for p, b, _ in lines))
        sys.stdout.flush()
    _print_hints(con, report)


MAX_HINT_ROWS = 60


def escape_text(s) -> str:
    """A string from a file, safe for a terminal and for rich: control characters shown as
    escapes, markup brackets escaped, bounded length."""
    from rich.markup import escape

    s = str(s)
    s = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in s)
    return escape(short(s, 200))


def _print_architecture(con, arch: dict) -> None:
    """The layer graph a Keras 2 full model states in its model_config."""
    from rich.table import Table

    con.print()
    table = Table(title=f"Architecture from the file's model_config ({arch['class']}, "
                        f"{arch['parameters']:,} parameters in the file)",
                  title_justify="left", expand=False)
    for col in ("layer", "class", "settings", "output", "params", "inbound"):
        table.add_column(col, justify="right" if col == "params" else "left",
                         no_wrap=col in ("output", "params"))
    def fmt(v):
        if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            return "x".join(map(str, v))
        return v

    for r in arch["layers"][:MAX_HINT_ROWS * 4]:
        args = " ".join(f"{k}={fmt(v)}" for k, v in r["args"].items()
                        if not (k == "strides" and fmt(v) in (1, "1x1", "1", "1x1x1")))
        shape = r.get("output_shape")
        shape = "?" if shape is None else \
            "(" + ", ".join("None" if d is None else str(d) for d in [None, *shape]) + ")"
        table.add_row(escape_text(r["name"]), escape_text(r["class"]), escape_text(args),
                      shape, f"{r['parameters']:,}", escape_text(", ".join(r["inbound"])))
    con.print(table)
    if len(arch["layers"]) > MAX_HINT_ROWS * 4:
        con.print(f"  … {len(arch['layers']) - MAX_HINT_ROWS * 4} more layers (--json lists all)")
    if arch.get("outputs"):
        con.print(f"outputs: {escape_text(', '.join(arch['outputs']))}", markup=False)


def _print_hints(con, report: InspectReport) -> None:
    if report.architecture:
        _print_architecture(con, report.architecture)
        return
    h = report.hints
    known = [lh for lh in h.layers if lh.proposal is not None]
    unknown = len(h.layers) - len(known)
    if not known:
        if h.layers:
            con.print(f"\nno layer recognised among {len(h.layers)} groups of tensors")
        return
    con.print()
    title = "Implied architecture"
    if h.chain_text:
        title += f": {neutral(h.chain_text)}"
    columns = ["#", "source unit", "looks like", "Keras layer", "to decide / notes"]
    rows = []
    explain: dict[str, None] = {}
    for i, lh in enumerate(known[:MAX_HINT_ROWS], 1):
        p = lh.proposal
        args = ", ".join(f"{k}={v}" for k, v in p.args.items())
        keys = []
        for d in p.decide:
            key = d.split(":")[0].split(" (")[0]
            keys.append(key)
            if key != d:
                explain[f"{key}: {d[len(key):].lstrip(' :')}"] = None
        rows.append([neutral(str(i)), neutral(lh.unit), neutral(p.summary),
                     neutral(f"{p.keras_class}({args})"),
                     neutral(", ".join(keys)) + ("\n" + neutral("; ".join(lh.notes))
                                                 if lh.notes else "")])
    if con.is_terminal:
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(title), title_justify="left", show_lines=False,
                      expand=False)
        for c in columns:
            table.add_column(c, justify="right" if c == "#" else "left")
        for r in rows:
            table.add_row(*(Text(c) for c in r))  # Text: file strings are never markup
        con.print(table)
    else:
        con.print(plain_table(title, columns, rows, right=(0,)), markup=False)
    if len(known) > MAX_HINT_ROWS:
        con.print(f"  … {len(known) - MAX_HINT_ROWS} more layers (--json lists all)")
    if unknown:
        con.print(f"  {unknown} groups of tensors not recognised as layers")
    for e in explain:
        con.print(f"  {e}", markup=False)
    if h.orientation:
        con.print(f"2-D weights: {h.orientation}", markup=False)
    if h.io:
        con.print(f"reference data in the file: inputs {h.io['inputs']}, "
                  f"expected outputs {h.io['expected']}", markup=False)
    if h.ignored:
        con.print(f"bookkeeping tensors (not weights): {', '.join(h.ignored)}", markup=False)
    for n in h.notes:
        con.print(f"note: {n}", markup=False)


def print_rebuild(report, show_plan: bool = False) -> None:
    con = _console()
    src = report.source
    plan = report.plan
    m = report.model
    con.print(f"source: {src['path']}  ({src['format']}, writer {src['writer'] or 'unknown'}, "
              f"convention {src['convention']})", markup=False)
    con.print(f"model: {m['name']} ({m['class']}), {m['layers_with_weights']} layers with "
              f"weights, {m['variables']} variables, {m['parameters']:,} parameters",
              markup=False)
    counts = ", ".join(f"{n} {k}" for k, n in plan.counts().items())
    con.print(f"mapped: {len(plan.assignments)} variables ({counts})", markup=False)
    if show_plan:
        for a in plan.assignments:
            srcs = " + ".join(f"{s.name} {tuple(s.stored_shape)}" for s in a.sources)
            con.print(f"  {a.target.key} {tuple(a.target.shape)} <- {srcs}  [{a.how}]",
                      markup=False)
            for op in a.ops:
                con.print(f"      {op.describe()}", markup=False)
    if plan.unused:
        con.print(f"[yellow]unused source tensors ({len(plan.unused)}):[/] "
                  f"{markup(', '.join(plan.unused[:12]))}{' ...' if len(plan.unused) > 12 else ''}")
    if plan.ignored:
        con.print(f"ignored (not weights): {', '.join(plan.ignored[:8])}", markup=False)
    if plan.missing_allowed:
        con.print(f"left as initialised (options.allow_missing): "
                  f"{', '.join(plan.missing_allowed)}", markup=False)
    for c in plan.casts:
        con.print(f"cast: {c}", markup=False)
    for n in report.notes:
        con.print(f"note: {n}", markup=False)
    for w in plan.warnings:
        con.print(f"[yellow]warning:[/] {markup(w)}")
    par = report.parity
    if par is not None:
        # a check against the model's own architecture proves the conversion only: its
        # verdict says so, never "OK"
        style = ("bold red" if not par.passed else
                 "yellow" if par.kind == "self-reference" else "green")
        con.print(f"parity ({par.method}): [{style}]{par.summary()}[/]")
    else:
        con.print(f"parity: {report.parity_note}", markup=False)
    if report.undecided or (par is not None and par.passed and par.kind != "data"):
        from rich.markup import escape

        con.print(f"[yellow]unverified:[/] {escape(report.unverified_reason or '')}")
    if report.diagnosis:
        print_diagnosis(con, report.diagnosis)
    if report.output:
        con.print(f"saved: {report.output['path']} ({report.output['size_text']})",
                  markup=False)
        if report.output.get("provenance_file"):
            con.print(f"  provenance: {report.output['provenance_file']} (the source's "
                      f"sha256 and the spec, for finetune and export)", markup=False)


def print_diagnosis(con, d) -> None:
    """The per-layer comparison (a :class:`~wtransplant.checking.diagnose.Diagnosis`) as a
    short table, the first diverging layer and its cause."""
    layers = d.layers
    if d.note and not layers:
        con.print(f"diagnosis: {d.note}", markup=False)
        return
    bad = d.first_bad
    con.print(f"per-layer comparison with the {d.method or 'reference'}:", markup=False)
    shown = layers
    if len(layers) > 14 and bad:
        i = next((k for k, x in enumerate(layers) if x.name == bad), 0)
        shown = layers[max(0, i - 6):i + 4]
    for x in shown:
        mark = "ok " if x.ok else "BAD"
        arrow = "  <- first diverging layer" if x.name == bad else ""
        con.print(f"  {mark} {x.name:<24} {x.class_name:<20} max rel err "
                  f"{x.max_rel:.2e}{arrow}", markup=False)
    if bad and d.cause:
        con.print(f"  cause: {d.cause}", markup=False)
        con.print(f"  evidence: {d.evidence}", markup=False)
    elif bad:
        con.print("  cause: none of the classic mistakes (transposed square kernel, gate "
                  "order, flatten order, normalisation epsilon) explains it", markup=False)


def _short_sha(sha: str | None) -> str:
    return f"{sha[:12]}…" if sha else "?"


def print_export(report) -> None:
    from rich.table import Table

    con = _console()
    m = report.model
    prov = report.provenance
    ins = ", ".join(f"{t['name']} {_shape(t['shape'])} {t['dtype']}" for t in m["inputs"])
    outs = ", ".join(f"{t['name']} {_shape(t['shape'])} {t['dtype']}" for t in m["outputs"])
    where = m["path"] or "<in-memory model>"
    sha = f", sha256 {_short_sha(m['sha256'])}" if m.get("sha256") else ""
    con.print(f"model: {where} ({m['kind']}{sha}), {m['parameters']:,} parameters",
              markup=False)
    con.print(f"  inputs: {ins}", markup=False)
    con.print(f"  outputs: {outs}", markup=False)
    src = prov.get("source")
    if src:
        rr = prov.get("report") or prov.get("rebuild_report")
        via = f" (from {rr['path']})" if rr and rr.get("path") else ""
        con.print(f"source weights: {src.get('path')} sha256 {_short_sha(src.get('sha256'))}"
                  f"{', spec recorded' if prov.get('spec') else ''}{via}", markup=False)
        rebuilt = prov.get("rebuild_report") or {}
        if rebuilt.get("verified") is False:
            con.print(f"  unverified rebuild: {rebuilt.get('unverified_reason') or '?'}",
                      markup=False)
        if prov.get("finetune"):
            n = len(prov["finetune"])
            con.print(f"  fine-tuned since: {n} run{'s' if n > 1 else ''} "
                      f"(last on {prov['finetune'][-1].get('data')})", markup=False)
    else:
        con.print("source weights: not known (pass --provenance R.json, the rebuild or "
                  "finetune report, to record them)", markup=False)
    for w in prov.get("warnings", []):
        con.print(f"[yellow]warning:[/] {markup(w)}")
    for n in report.notes:
        con.print(f"note: {n}", markup=False)
    s = report.settings
    verified = any(r.verified for r in report.results)
    if verified:
        sizes = f"{s['batch_size']}" + (f" and {s['second_batch']}"
                                        if s["second_batch"] != s["batch_size"] else "")
        atol = (f"{s['atol']:g}" if s.get("atol") is not None else
                f"{s.get('atol_rule', '').replace(' output', '')}")
        con.print(f"checked: batches of {sizes} seeded random samples (seed {s['seed']})",
                  markup=False)
        con.print("pass: |exported - keras| <= atol + rtol x |keras| per element and output",
                  markup=False)
        con.print(f"  atol {atol}, rtol {s['rtol']:g}; max rel err = max |error| / max "
                  f"|keras|", markup=False)
    # at most 80 columns: short columns that do not wrap, the verdict in its own column
    # (a pipe or a log gets the width of COLUMNS, 80 by default; a longer cell wraps)
    from rich import box

    table = Table(show_lines=False, expand=False, box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just, nowrap in (("format", "left", False), ("verdict", "left", True),
                              ("max rel err", "left", True), ("size", "right", True),
                              ("median ms", "right", True), ("keras ms", "right", True)):
        table.add_column(col, justify=just, no_wrap=nowrap, overflow="fold")
    for r in report.results:
        if r.parity:
            errs = "/".join(f"{p.max_rel:.2g}" for p in r.parity)
            style = "green" if r.passed else "bold red"
            verdict = f"[{style}]{'OK' if r.passed else 'FAILED'}[/]"
        else:
            errs, verdict = "-", "not checked"
        lat = r.latency or {}
        ms = f"{lat['median_ms']:.3g}" if lat else ""
        kms = f"{lat['keras_median_ms']:.3g}" if lat else ""
        table.add_row(r.format, verdict, errs, fmt_bytes(r.size), ms, kms)
    con.print(table)
    if any(r.latency for r in report.results):
        lat = next(r.latency for r in report.results if r.latency)
        con.print(f"latency: median of up to {report.settings['repeats']} runs on the same "
                  f"batch of {lat['batch']}; keras = predict_on_batch", markup=False)
    for r in report.results:
        opset = f", opset {r.opset}" if r.opset else ""
        con.print(f"wrote {r.format}: {r.path} (runs in {r.runtime}{opset})", markup=False)
        for n in r.notes:
            con.print(f"  note: {n}", markup=False)
        if r.provenance_file:
            con.print(f"  provenance: {r.provenance_file}", markup=False)
    for sk in report.skipped:
        con.print(f"[yellow]skipped {sk['format']}:[/] {markup(sk['reason'])}")


def print_verify(report) -> None:
    con = _console()
    m = report.model
    con.print(f"model: {m.get('path') or '<in-memory model>'} ({m.get('kind')}, runtime "
              f"{m.get('runtime')})", markup=False)
    if report.other:
        o = report.other
        con.print(f"other: {o.get('path')} ({o.get('kind')}, runtime {o.get('runtime')})",
                  markup=False)
    con.print(f"inputs: {report.inputs}", markup=False)
    con.print(f"against: {report.against}", markup=False)
    style = "green" if report.parity.passed else "bold red"
    con.print(f"parity: [{style}]{report.parity.summary()}[/]")
    for i, o in enumerate(report.parity.outputs):
        con.print(f"  output {i}: {o.summary()}", markup=False)
    if report.diagnosis:
        print_diagnosis(con, report.diagnosis)
    if report.plot:
        con.print(f"plot: {report.plot}", markup=False)
    for n in report.notes:
        con.print(f"note: {n}", markup=False)


def _metrics_text(ev: dict | None) -> str:
    if not ev:
        return "n/a"
    return "  ".join(f"{k} {v:.4f}" for k, v in ev.items() if isinstance(v, float))


def print_finetune(report: dict) -> None:
    con = _console()
    m, d = report["model"], report["data"]
    head = m["head"]
    new = f" (new, replaces {', '.join(m['replaced_head'])})" if m.get("replaced_head") else ""
    con.print(f"model: {m.get('source')}  head {head['name']!r}: {head['units']} units, "
              f"{head['activation']}{new}", markup=False)
    val = d.get("val")
    con.print(f"data: {d['train']['x']} ({d['train']['samples']} samples); validation: "
              + (f"{val['x']} ({val['samples']}, {val['from']})" if val else "none"),
              markup=False)
    con.print(f"task: {report['task']}, loss {report['loss']}, metrics "
              f"{', '.join(report['metrics'])}; precision {report['precision']['policy']}; "
              f"BatchNorm {report['batchnorm']}", markup=False)
    for p in report["phases"]:
        con.print(f"phase {p['name']}: epochs {p['epochs'][0]}..{p['epochs'][1]}, lr {p['lr']:g}, "
                  f"trainable: {', '.join(p['trainable'])}", markup=False)
    if report["frozen"]:
        ok = report.get("frozen_unchanged")
        state = "" if ok is None else ("  (weights unchanged)" if ok else "  (CHANGED!)")
        con.print(f"frozen: {', '.join(report['frozen'])}{state}", markup=False)
    ev = report["evaluation"]
    if "before_original_model" in ev:
        con.print(f"before (original model, argmax): accuracy "
                  f"{ev['before_original_model']['accuracy']:.4f}", markup=False)
    con.print(f"before ({(ev.get('before') or {}).get('data', '-')}): "
              f"{_metrics_text(ev.get('before'))}", markup=False)
    con.print(f"after  ({(ev.get('after') or {}).get('data', '-')}): "
              f"{_metrics_text(ev.get('after'))}", markup=False)
    if report.get("throughput_samples_per_s"):
        con.print(f"throughput: {report['throughput_samples_per_s']:.0f} samples/s "
                  f"({report['epochs_run']} epochs, {report['seconds']:.1f} s in all)",
                  markup=False)
    sk = report.get("skipped_nonfinite")
    if sk is not None:
        con.print(f"skipped: {sk['samples']} sample(s) holding NaN/Inf"
                  + "".join(f"; {k}: {', '.join(map(str, v[:10]))}"
                            for k, v in sk["by_array"].items()), markup=False)
    for n in report.get("notes") or []:
        con.print(f"note: {n}", markup=False)
    if report.get("output"):
        o = report["output"]
        con.print(f"saved: {o['path']} ({o['size_text']})", markup=False)
    prov = report.get("provenance")
    if prov and prov.get("source"):
        src = prov["source"]
        con.print(f"original weights: {src.get('path')} sha256 {_short_sha(src.get('sha256'))}"
                  f" (recorded in the report and next to the saved model)", markup=False)
    for k, v in (report.get("files") or {}).items():
        con.print(f"{k.replace('_', ' ')}: {v}", markup=False)


def print_settled(report: dict) -> None:
    """Every settled choice with the winner's and the runner-up's errors (stderr)."""
    import click

    def t(s) -> str:  # names come from the file: no control characters reach the terminal
        return "".join(ch if ch.isprintable() else "?" for ch in short(s, 200))

    def e(v) -> str:
        return "-" if v is None else f"{v:.2g}"

    for c in report.get("choices") or []:
        ru = f", runner-up {t(c['runner_up'])} {e(c['runner_up_error'])}" \
            if c.get("runner_up") is not None else ""
        line = (f"{c['status']:<10} {t(c['where'])}: {t(c['winner'])} {e(c['winner_error'])}"
                f"{ru}")
        if c.get("split_with"):
            line += f" (to split: {t(c['split_with'])})"
        click.echo(line, err=True)
    for w in report.get("warnings") or []:
        click.echo(f"warning: {t(w)}", err=True)
    if report.get("degenerate"):
        click.echo(f"the inputs are too degenerate to settle anything: "
                   f"{t(report['degenerate'])}", err=True)
    click.echo(f"settled {report['settled']} of {report['settled'] + report['undecided']} "
               f"choice(s) with {report['forward_evaluations']} forward passes (every "
               f"combination: {report['exhaustive_evaluations']}) in "
               f"{report['seconds']:.2f} s", err=True)
