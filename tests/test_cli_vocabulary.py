"""One vocabulary across commands (issue 11.6) and provenance through fine-tuning (11.7):
--report writes, --provenance reads, --atol/--rtol validated, --quiet/--json everywhere,
the export table at 80 columns, verify's "against:" line, layer-argument errors with the
spec file and line; rebuild -> finetune -> export onnx still names the original weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import assert_one_line_error, fx, run_cli, sha256
from wtransplant_cli.main import main

REPORTING = ("inspect", "rebuild", "verify", "export", "finetune")


def _invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


# --------------------------------------------------------------------------------------
# options (click only: nothing heavy is imported before an option is refused)


@pytest.mark.parametrize("command", REPORTING)
def test_every_reporting_command_has_report_json_and_quiet(command):
    r = _invoke(command, "--help")
    assert r.exit_code == 0, r.output
    for opt in ("--report", "--json", "--quiet"):
        assert re.search(rf"(^|\s|, ){opt}\b", r.output), (command, opt)
    # the old names are gone from the help (export keeps them as hidden aliases)
    for old in ("--rel-tol", "--save-report"):
        assert old not in r.output, (command, old)
    if command in ("export", "finetune"):
        assert "--provenance" in r.output
    if command in ("rebuild", "verify", "export"):
        assert "--atol" in r.output and "--rtol" in r.output


@pytest.mark.parametrize("args", [
    ("verify", "m.keras", "--inputs", "x.npy", "--expected", "y.npy", "--atol", "-1"),
    ("verify", "m.keras", "--rtol", "-0.5"),
    ("rebuild", "--spec", "s.yaml", "--atol", "-1"),
    ("export", "m.keras", "-f", "onnx", "-o", "m.onnx", "--atol", "-1"),
    ("export", "m.keras", "-f", "onnx", "-o", "m.onnx", "--rtol", "-1e-3"),
    ("export", "m.keras", "-f", "onnx", "-o", "m.onnx", "--batch-size", "0"),
    ("verify", "m.keras", "--samples", "0"),
    ("finetune", "m.keras", "--data", "d.h5", "-o", "o.keras", "--epochs", "0"),
    ("finetune", "m.keras", "--data", "d.h5", "-o", "o.keras", "--batch-size", "-4"),
    ("finetune", "m.keras", "--data", "d.h5", "-o", "o.keras", "--lr", "0"),
    ("finetune", "m.keras", "--data", "d.h5", "-o", "o.keras", "--val-split", "1.5"),
])
def test_out_of_range_numbers_are_refused_with_exit_2(args):
    r = _invoke(*args)
    assert r.exit_code == 2, (args, r.output)
    assert "Invalid value" in r.output, r.output


def test_atol_minus_one_is_refused_by_the_installed_command():
    r = run_cli("verify", "m.keras", "--inputs", "x.npy", "--expected", "y.npy",
                "--atol", "-1")
    assert r.returncode == 2
    assert "--atol" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------
# the export table at 80 columns


def _export_report(passed_last: bool):
    from wtransplant.exporting.export import BatchParity, ExportReport, FormatResult

    results = []
    runtimes = {"keras": "keras", "h5": "keras", "savedmodel": "tf.saved_model",
                "onnx": "onnxruntime", "tflite": "LiteRT"}
    for f, rt in runtimes.items():
        r = FormatResult(format=f, path=f"/some/rather/long/folder/name/for/outputs/model.{f}",
                         runtime=rt, size=123_456_789, verified=True,
                         opset=18 if f == "onnx" else None,
                         latency={"median_ms": 1.234, "keras_median_ms": 12.34, "batch": 16})
        ok = passed_last or f != "tflite"
        r.parity = [BatchParity(16, {}, ok, 1e-7, 1.23e-7 if ok else 0.37),
                    BatchParity(3, {}, True, 1e-7, 2.5e-7)]
        results.append(r)
    return ExportReport(
        model={"path": "m.keras", "kind": "keras", "sha256": "a" * 64, "parameters": 12345,
               "inputs": [{"name": "input", "shape": [None, 16, 16, 3], "dtype": "float32"}],
               "outputs": [{"name": "fc", "shape": [None, 10], "dtype": "float32"}]},
        provenance={"source": {"path": "/x/torch_cnn.h5", "sha256": "b" * 64}, "spec": {}},
        settings={"batch_size": 16, "second_batch": 3, "seed": 0, "atol": None,
                  "atol_rule": "1e-05 x max |keras output|", "rtol": 1e-5, "repeats": 20},
        results=results)


@pytest.mark.parametrize("how", ["COLUMNS", "console"])
def test_export_table_fits_80_columns_and_keeps_every_verdict(how, monkeypatch, capsys):
    from rich.cells import cell_len
    from rich.console import Console
    from wtransplant_cli import render

    monkeypatch.setenv("COLUMNS", "80")
    if how == "console":
        monkeypatch.setattr(render, "_console",
                            lambda: Console(width=80, highlight=False, soft_wrap=True))
    render.print_export(_export_report(passed_last=False))
    out = capsys.readouterr().out
    lines = out.splitlines()
    table = [ln for ln in lines if ln.startswith(" ") and ("MiB" in ln or "verdict" in ln)]
    assert len(table) == 6, out  # header + five formats
    for ln in table:
        assert cell_len(ln) <= 80, (cell_len(ln), ln)
    rows = {ln.split()[0]: ln.split() for ln in table[1:]}
    assert set(rows) == {"keras", "h5", "savedmodel", "onnx", "tflite"}
    assert [rows[f][1] for f in ("keras", "h5", "savedmodel", "onnx")] == ["OK"] * 4
    assert rows["tflite"][1] == "FAILED"
    assert "0.37" in rows["tflite"][2]


# --------------------------------------------------------------------------------------
# verify names the other artifact; a layer-argument typo names file, line and layer


@pytest.fixture(scope="module")
def octave_pair(tmp_path_factory):
    from wtransplant.building.transplanting import rebuild, save_model

    d = tmp_path_factory.mktemp("pair")
    model, _ = rebuild(fx("specs/octave_mlp.yaml"), output=d / "a.keras", progress=False)
    save_model(model, d / "b.h5")
    return d / "a.keras", d / "b.h5"


def test_verify_against_line_names_the_other_artifact(octave_pair, monkeypatch, capsys):
    from wtransplant_cli import render

    from wtransplant.checking.verification import verify

    a, b = octave_pair
    rep = verify(a, other=b)
    assert rep.against.startswith(str(b)), rep.against
    assert str(a) not in rep.against
    monkeypatch.setenv("COLUMNS", "80")
    render.print_verify(rep)
    out = capsys.readouterr().out
    assert f"against: {b}" in out, out


def test_layer_argument_typo_names_spec_file_line_and_layer(tmp_path):
    from wtransplant.building.transplanting import rebuild
    from wtransplant.errors import InputError

    text = fx("specs/octave_mlp.yaml").read_text()
    text = text.replace("source: ../octave/octave_mlp.h5",
                        f"source: {fx('octave/octave_mlp.h5')}")
    lines = text.splitlines()
    n = next(i for i, ln in enumerate(lines) if "name: fc2" in ln)
    lines[n] = lines[n].replace("activation:", "activaton:")
    spec = tmp_path / "typo.yaml"
    spec.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        rebuild(spec, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{spec.resolve()}:{n + 1}: model.layers[1] (Dense 'fc2')"), msg
    assert "activaton" in msg and "\n" not in msg


# --------------------------------------------------------------------------------------
# provenance: rebuild -> finetune -> export onnx


@pytest.mark.slow
def test_onnx_of_a_finetuned_transplant_names_the_original_weights(tmp_path):
    import onnx

    from wtransplant.building.transplanting import rebuild_file

    src = fx("keras2/k2_digits_model.h5")
    want = sha256(src)
    rebuilt = tmp_path / "digits.keras"
    rebuild_report = tmp_path / "digits.rebuild.json"
    rebuild_file(src, output=rebuilt, report_path=rebuild_report, progress=False)
    side = json.loads((tmp_path / "digits.keras.wtransplant.json").read_text())
    assert side["source"]["sha256"] == want and side["model_file"]["sha256"] == sha256(rebuilt)

    # finetune (as a user would): the model carries its provenance, no flag needed
    tuned = tmp_path / "tuned.keras"
    ft_report = tmp_path / "tuned.report.json"
    r = run_cli("finetune", rebuilt, "--data", fx("data/digits.h5"), "--epochs", "1",
                "--batch-size", "128", "--seed", "1", "--new-head", "10", "--no-plot", "-o", tuned,
                "--report", ft_report, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""  # --quiet: nothing on stdout
    ft = json.loads(ft_report.read_text())
    assert ft["wtransplant_report"] == "finetune"
    assert ft["provenance"]["source"]["sha256"] == want
    assert ft["provenance"]["rebuild_report"]["path"] == str(rebuild_report)
    assert ft["model"]["input_file"]["sha256"] == sha256(rebuilt)
    hist = json.loads(Path(ft["files"]["history_json"]).read_text())
    assert hist["provenance"]["source"]["sha256"] == want
    assert ft["output"]["sha256"] == sha256(tuned)

    # export without --provenance: picked up from the fine-tuned model's sidecar
    out1 = tmp_path / "tuned.onnx"
    r = run_cli("export", tuned, "--format", "onnx", "-o", out1, "--report",
                tmp_path / "e1.json", "--repeats", "1")
    assert r.returncode == 0, r.stderr
    # nothing on stderr: no TensorFlow log lines, no Keras warning about the input structure
    # of a Keras 2 model built with inputs=[x]
    assert r.stderr.strip() == "", r.stderr
    props = {p.key: p.value for p in onnx.load(str(out1)).metadata_props}
    assert props["wtransplant.source_sha256"] == want
    assert props["wtransplant.model_sha256"] == sha256(tuned)
    prov = json.loads(props["wtransplant.provenance"])
    assert len(prov["finetune"]) == 1 and prov["finetune"][0]["input_model"]["sha256"] == \
        sha256(rebuilt)
    e1 = json.loads((tmp_path / "e1.json").read_text())
    assert e1["wtransplant_report"] == "export"
    assert e1["provenance"]["source"]["sha256"] == want
    assert e1["settings"]["rtol"] == 1e-5 and e1["results"][0]["passed"]

    # with the finetune report named explicitly (library: same keyword names)
    from wtransplant.exporting.export import export_model

    (tmp_path / "tuned.keras.wtransplant.json").unlink()  # only the report tells now
    rep = export_model(tuned, "onnx", tmp_path / "tuned2.onnx", provenance=ft_report,
                       repeats=1, progress=False)
    assert rep.provenance["source"]["sha256"] == want
    assert rep.provenance["report"]["kind"] == "finetune"
    assert not rep.provenance.get("warnings"), rep.provenance
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "tuned2.onnx")).metadata_props}
    assert props["wtransplant.source_sha256"] == want

    # the rebuild report of the model before fine-tuning is accepted, with a warning
    rep = export_model(tuned, "onnx", tmp_path / "tuned3.onnx", provenance=rebuild_report,
                       repeats=1, progress=False)
    assert rep.provenance["source"]["sha256"] == want
    assert any("another model" in w for w in rep.provenance["warnings"])

    # a sidecar that describes another file (here: the model before fine-tuning) is not used
    (tmp_path / "tuned.keras.wtransplant.json").write_text(
        (tmp_path / "digits.keras.wtransplant.json").read_text())
    rep = export_model(tuned, "onnx", tmp_path / "tuned4.onnx", repeats=1, progress=False)
    assert rep.provenance["source"] is None
    assert any("describes another file" in w for w in rep.provenance["warnings"])


def test_provenance_of_something_else_is_one_line_exit_2(tmp_path):
    from wtransplant.errors import InputError
    from wtransplant.provenance import read_report

    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"wtransplant_report": "export"}))
    with pytest.raises(InputError, match="not a wtransplant rebuild or finetune report"):
        read_report(bad)
    bad.write_text(json.dumps({"wtransplant_report": "finetune", "provenance": None}))
    with pytest.raises(InputError, match="names no source weights"):
        read_report(bad)
    r = run_cli("export", fx("keras2/k2_digits_model.h5"), "-f", "onnx", "-o",
                tmp_path / "x.onnx", "--provenance", bad)
    assert_one_line_error(r, 2, str(bad), "names no source weights")


def test_old_export_names_are_hidden_aliases_with_a_warning(tmp_path):
    r = _invoke("export", tmp_path / "none.keras", "-f", "onnx", "-o", tmp_path / "x.onnx",
                "--save-report", tmp_path / "r.json", "--rel-tol", "1e-5")
    assert r.exit_code == 2, r.output  # the model does not exist: refused after parsing
    assert "--save-report is deprecated; use --report" in r.output
    assert "--rel-tol is deprecated; use --atol/--rtol" in r.output
    r = _invoke("export", tmp_path / "none.keras", "-f", "onnx", "-o", tmp_path / "x.onnx",
                "--save-report", tmp_path / "a.json", "--report", tmp_path / "b.json")
    assert r.exit_code == 2 and "give --report once" in r.output, r.output


def test_rebuild_quiet_prints_nothing_and_report_writes_json(tmp_path):
    rep = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["rebuild", "--spec", str(fx("specs/octave_mlp.yaml")), "-o",
                                  str(tmp_path / "m.keras"), "--report", str(rep), "--quiet"])
    assert r.exit_code == 0, r.output
    assert r.stdout == "", r.stdout
    d = json.loads(rep.read_text())
    assert d["wtransplant_report"] == "rebuild" and d["parity"]["passed"]
    side = json.loads((tmp_path / "m.keras.wtransplant.json").read_text())
    assert side["source"]["sha256"] == sha256(fx("octave/octave_mlp.h5"))
    assert side["rebuild_report"]["path"] == str(rep)
    assert side["rebuild_report"]["verified"] is True  # checked against Octave's outputs
    assert d["output"]["provenance_file"] == str(tmp_path / "m.keras.wtransplant.json")


def test_inspect_quiet_with_report_writes_the_json_and_prints_nothing(tmp_path):
    out = tmp_path / "i.json"
    r = run_cli("inspect", fx("octave/octave_mlp.h5"), "--quiet", "--report", out)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    d = json.loads(out.read_text())
    assert d["format"] == "octave" and len(d["tensors"]) == 8


def test_report_may_not_overwrite_an_input(tmp_path):
    m = tmp_path / "m.keras"
    m.write_bytes(b"not touched")
    for args in (("export", m, "-f", "onnx", "-o", tmp_path / "x.onnx", "--report", m),
                 ("finetune", m, "--data", fx("data/digits.h5"), "-o", tmp_path / "o.keras",
                  "--report", fx("data/digits.h5"))):
        r = _invoke(*args)
        assert r.exit_code == 2, r.output
        assert "is also an input or output" in r.output
    assert m.read_bytes() == b"not touched"
