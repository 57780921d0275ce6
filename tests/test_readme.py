"""Every Python snippet of README.md and of docs/usage.md runs as written (in order, in one fresh interpreter per
page) and does what its comments say, and every link to a file of the repository points to a file that exists."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _snippets(text: str):
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_snippets_run():
    snippets = _snippets((ROOT / "README.md").read_text())
    assert len(snippets) >= 3
    code = "\n".join(snippets)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch.Size([64, 3])" in done.stdout


def test_usage_snippets_run_and_match_their_comments():
    snippets = _snippets((ROOT / "docs" / "usage.md").read_text())
    assert len(snippets) >= 4
    # what the comments of the snippets claim, checked after they ran
    claims = """
assert (small_rnn.hidden_size, tuple(small_readout.weight.shape)) == (32, (10, 32))
assert len(res.layers) == 4 and res.readout.in_features == 128
assert [lp.k for lp in res.layers] == [96, 96, 64, 64]
assert (small.model.attn.in_features, small.model.head.in_features, small.model.gru.hidden_size) == (32, 64, 16)
assert repr(asr.rnn) == "LSTM(40, 48, proj_size=32, num_layers=2, batch_first=True)"
assert all(torch.equal(asr.model.state_dict()[n], p) for n, p in model.state_dict().items() if "lstm" not in n)
print("claims hold")
"""
    code = "\n".join(snippets) + claims
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "claims hold" in done.stdout


def test_links_to_repository_files_exist():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: broken link {target}"


def test_source_files_the_pages_name_exist():
    """A page that names a module by path (`pruning/compress.py`) names one that exists: a renamed module left
    `pruning/stack.py` in docs/theory.md."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in re.findall(r"`((?:pruning|theory|checks|benchmarks|tests)/[\w/]+\.py)", page.read_text()):
            assert (ROOT / path).exists(), f"{page.relative_to(ROOT)} names {path}, which does not exist"


def test_no_page_points_outside_the_repository():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "../shared" not in page.read_text(), page
