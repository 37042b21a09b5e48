"""Rows from interleaved timings, and the Markdown report.

A row is one measured call (a Keras path, or the reference model's inference
or training step) at one precision: images/s as the median over the rounds
with the slowest and fastest round, GFLOP/s, the fraction of the matmul rate
of the row's own library timed in the same rounds, and per-round ratios
against the reference (timm or the authors' code) and against float32.
"""

import statistics

from keras_mixer.benchmark import timing


def _median_and_spread(values):
    return timing.spread(values)


def matmul_key(precision, library):
    """The measurement name of a matmul rate."""
    return f"{precision}/matmul/{library}"


def rows_from_times(measurements, times, model_name, batch_size, image_size):
    """The rows of every measurement that is not a matmul rate.

    `measurements` carry in their info: framework, path, mode, written,
    precision and library (whose matmul rate the row is compared with: the
    measurement `matmul_key(precision, library)`, or `matmul_name`); a
    reference model's rows have reference=True. Returns (rows, {matmul name: spread of GFLOP/s}).
    """
    by_name = {m.name: m for m in measurements}
    matmul = {}
    for m in measurements:
        if m.info.get("matmul"):
            matmul[m.name] = _median_and_spread(
                [r / 1e9 for r in timing.rates(times[m.name], m.flops)])
    rows = []
    for m in measurements:
        if m.info.get("matmul"):
            continue
        seconds = times[m.name]
        row = dict(model=model_name, batch=batch_size, image_size=image_size,
                   name=m.name, images=m.images,
                   **{k: v for k, v in m.info.items() if k != "library"})
        row["images_per_s"] = _median_and_spread(timing.rates(seconds, m.images))
        row["gflop_per_s"] = statistics.median(timing.rates(seconds, m.flops)) / 1e9
        key = m.info.get("matmul_name") or matmul_key(
            m.info["precision"], m.info.get("library", ""))
        if key in by_name:
            row["matmul_fraction"] = _median_and_spread(timing.ratios(
                seconds, times[key], m.flops, by_name[key].flops))
            row["matmul_library"] = m.info.get("library")
        rows.append(row)
    _add_ratios(rows, times, by_name)
    return rows, matmul


def _add_ratios(rows, times, by_name):
    def find(precision, mode, reference, path=None, framework=None):
        for row in rows:
            if (row["precision"], row["mode"]) != (precision, mode):
                continue
            if bool(row.get("reference")) != reference:
                continue
            if path is not None and row.get("path") != path:
                continue
            if framework is not None and row["framework"] != framework:
                continue
            return row
        return None

    def ratio(row, other):
        a, b = by_name[row["name"]], by_name[other["name"]]
        return _median_and_spread(timing.ratios(
            times[a.name], times[b.name], a.images, b.images))

    for row in rows:
        if not row.get("reference"):
            other = (find(row["precision"], row["mode"], True, row.get("path"))
                     or find(row["precision"], row["mode"], True))
            if other:
                row["ratio_vs_reference"] = ratio(row, other)
                row["reference_name"] = other["framework"]
        if row["precision"] != "float32":
            other = find("float32", row["mode"], bool(row.get("reference")),
                         row.get("path"), row["framework"])
            if other:
                row["ratio_vs_float32"] = ratio(row, other)


def _spread_text(value, spec, suffix=""):
    """'median (low–high)' of a spread, or '–'."""
    if value is None:
        return "–"
    return (f"{format(value['median'], spec)}{suffix} "
            f"({format(value['low'], spec)}–{format(value['high'], spec)})")


def _matmul_label(name):
    """'float32/matmul/torch' (or 'worker:float32/matmul/torch') ->
    'torch float32'."""
    precision, _, library = name.split(":")[-1].partition("/matmul/")
    return f"{library} {precision}"


def _percent(value):
    if value is None:
        return "–"
    return (f"{value['median']:.0%} ({value['low']:.0%}–{value['high']:.0%})")


def format_markdown(rows, machine, command=None):
    """A Markdown section for BENCHMARKS.md: the command, the machine and its
    load, the matmul rates and one table row per measured call."""
    command = command or machine.get("command", "")
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()
                         if v)
    lines = ["```", command, "```", ""]
    for warning in machine.get("warnings", ()):
        lines.append(f"**Busy machine: {warning}.**")
    lines += [
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('usable_cores', '?')} usable), Python "
        f"{machine.get('python', '?')}; {machine.get('load', 'load not measured')}",
        f"- Keras backend: {machine.get('backend', '?')}; {versions}",
        f"- {machine.get('rounds', '?')} interleaved rounds after "
        f"{machine.get('warmup', '?')} untimed call(s) of each; predict and fit "
        f"run {machine.get('steps', '?')} batches per call, the other calls one. "
        "Figures: median over the rounds (slowest–fastest round); ratios are "
        "taken round by round.",
    ]
    matmul = machine.get("matmul_gflop_per_s") or {}
    if matmul:
        shape = " x ".join(str(s) for s in machine.get("matmul_shape", ()))
        lines.append(f"- Matmul rate ({shape}, same rounds), GFLOP/s: " + ", ".join(
            f"{_matmul_label(name)} {_spread_text(v, '.1f')}"
            for name, v in matmul.items()))
    if machine.get("reference"):
        lines.append(f"- Reference: {machine['reference']}")
    lines += [
        "",
        "| call | framework | precision | mode | images/s | GFLOP/s "
        "| of its matmul rate | vs reference | vs float32 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        framework = row["framework"]
        if row.get("jit_compile"):
            framework += (" (torch.compile)" if row.get("backend") == "torch"
                          else " (XLA)")
        reference = row.get("ratio_vs_reference")
        lines.append(
            f"| `{row.get('written', row['name'])}` | {framework} "
            f"| {row['precision']} | {row['mode']} "
            f"| {_spread_text(row['images_per_s'], '.2f')} "
            f"| {row['gflop_per_s']:.1f} "
            f"| {_percent(row.get('matmul_fraction'))} "
            f"| {_spread_text(reference, '.2f', '×')} "
            f"| {_spread_text(row.get('ratio_vs_float32'), '.2f', '×')} |")
    tflite = machine.get("tflite_rows") or []
    if tflite:
        lines += ["", "| TFLite, batch 1 | latency ms | vs float32 |",
                  "|---|---:|---:|"]
        for row in tflite:
            ratio = row.get("ratio_vs_float32")
            lines.append(f"| {row['precision']} ({row.get('threads') or 'default'}"
                         f" threads) | {row['latency_ms']:.2f} "
                         f"| {'–' if ratio is None else f'{ratio:.2f}×'} |")
    return "\n".join(lines)
