"""The Python examples of docs/conversion.md run as written."""

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "conversion.md"


def test_conversion_doc_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/conversion.md has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"print": lambda *a, **k: None})
