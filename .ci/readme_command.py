"""Print the shell command that follows ``<!-- NAME -->`` in README.md (used by .ci/run and the tests)."""

import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
match = re.search(rf"<!-- {re.escape(sys.argv[1])} -->\s*```bash\n(.+?)\n```", readme, re.S)
if match is None:
    sys.exit(f"README.md has no command marked <!-- {sys.argv[1]} -->")
print(match.group(1).strip())
