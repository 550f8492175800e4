"""The README's promises: its first Python block runs offline as written and prints what it says; its links resolve."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_first_python_block_runs_offline_as_written_and_prints_what_its_comments_say():
    block = re.search(r"```python\n(.*?)```", README, re.DOTALL).group(1)
    expected = re.findall(r"# prints: (.*)", block)
    assert expected, "the quickstart should say what it prints"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", block], check=False, cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected


def test_every_relative_link_in_the_readme_names_a_file_that_exists():
    links = [link for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README) if "://" not in link]
    assert links, "the README should link to the documentation pages"
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, missing
