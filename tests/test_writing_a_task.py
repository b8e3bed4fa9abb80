"""The example of docs/writing_a_task.md runs as printed (a custom task through compare)."""

import re
from pathlib import Path


def test_the_writing_a_task_example_runs():
    page = (Path(__file__).parents[1] / "docs" / "writing_a_task.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    namespace: dict = {}
    exec(compile(code.replace("epochs=3)", "epochs=1, progress=False)"), "writing_a_task.md", "exec"), namespace)
    summary = namespace["result"].summary
    assert set(summary["rule"]) == {"bp", "fa"} and (namespace["result"].runs["status"] == "done").all()
