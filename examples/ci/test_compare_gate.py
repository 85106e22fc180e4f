"""The gate itself is tested: a really damaged copy of the model fails `compare`, the unchanged model passes.

"Damaged" means the strongest head that the baseline audit flagged as encoding TFC1 is cut out of the model: its
columns of the attention output projection are set to zero and the checkpoint is saved again.
"""

import shutil
from pathlib import Path

import torch
from transformers import AutoModel

from mechir_axioms import load_audit
from mechir_axioms.cli import main
from mechir_axioms.models.loading import default_model_path

BASELINE = Path(__file__).parent / "baseline" / "TFC1"


def copy_of_the_model(folder: Path) -> Path:
    shutil.copytree(default_model_path(), folder)
    return folder


def zero_heads(folder: Path, heads: list[str]) -> None:
    """Remove attention heads ("layer.head") from a BERT checkpoint in place, and save it."""
    model = AutoModel.from_pretrained(folder)
    width = model.config.hidden_size // model.config.num_attention_heads
    with torch.no_grad():
        for name in heads:
            layer, head = (int(part) for part in name.split("."))
            model.encoder.layer[layer].attention.output.dense.weight[:, head * width : (head + 1) * width] = 0
    model.save_pretrained(folder)


def audit_and_compare(model: Path, out: Path, capsys) -> tuple[int, str]:
    n = str(load_audit(BASELINE).manifest["settings"]["n"])
    assert main(["audit", "--model", str(model), "--axioms", "TFC1", "--n", n, "--steps", "heads", "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["compare", str(BASELINE), str(out), "--junit-xml", str(out / "compare.xml")])
    return code, capsys.readouterr().out


def test_the_unchanged_model_passes(axiom_audit, tmp_path, capsys):
    """The packaged model itself, audited by the plugin with the baseline's settings (the same audit an unchanged
    copy would get), passes the command-line gate, which writes its JUnit and HTML reports."""
    folder = axiom_audit("TFC1").folder
    code = main(["compare", str(BASELINE), str(folder), "--junit-xml", str(tmp_path / "compare.xml"),
                 "--html", str(tmp_path / "compare.html")])
    table = capsys.readouterr().out
    print(table)
    assert code == 0, table
    assert "result: PASS" in table
    assert "<failure" not in (tmp_path / "compare.xml").read_text()
    assert "result: PASS" in (tmp_path / "compare.html").read_text()


def test_a_copy_without_one_flagged_tfc1_head_fails(tmp_path, capsys):
    """One head the baseline flags for TFC1, the strongest, cut out of a copy of the model: the paired comparison
    (both audits score the same pairs) finds that head's effect changed significantly, and the gate fails."""
    carriers = list(load_audit(BASELINE).flagged("TFC1").query("flag == 'encodes'")["name"])
    assert carriers, "the baseline flags no TFC1 head to remove"
    model = copy_of_the_model(tmp_path / "model")
    zero_heads(model, carriers[:1])
    code, table = audit_and_compare(model, tmp_path / "audit", capsys)
    print(table)
    assert code == 1, table
    assert "result: FAIL" in table and f"{carriers[0]} (encodes) †" in table
    junit = (tmp_path / "audit" / "compare.xml").read_text()
    assert '<testcase classname="mechir_axioms.compare" name="TFC1"><failure' in junit
