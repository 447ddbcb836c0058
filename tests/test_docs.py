"""The documentation: the site builds with no warning, its reference is the code's, and the
README and the docs point to things that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from html import unescape
from pathlib import Path

import pytest

from jobs.conf import DEFAULTS, DESCRIPTIONS
from tests.conftest import ROOT

DISTRIBUTION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
#: A relative link in Markdown: [text](target), without the #anchor.
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)")


def test_every_setting_has_a_description():
    """The settings reference is generated from these: a key without one has no entry."""
    assert [key for key in DEFAULTS if not DESCRIPTIONS.get(key, "").strip()] == []


def test_every_description_is_of_a_setting():
    assert [key for key in DESCRIPTIONS if key not in DEFAULTS] == []


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built as CI builds it: ``mkdocs build --strict`` (a warning fails it)."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the hooks configure Django themselves
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}{done.stderr}"
    assert "WARNING" not in done.stderr, done.stderr
    return out


def page_text(site: Path, page: str) -> str:
    """The text of a page's article, without its tags."""
    html = (site / page / "index.html").read_text()
    article = html[html.index("<article"):html.index("</article>")]
    return unescape(re.sub(r"<[^>]+>", "", article))


def test_the_settings_reference_lists_every_key_with_its_default_and_description(site):
    text = page_text(site, "reference/settings")

    for key in DEFAULTS:
        assert key in text
        assert re.sub(r"`|\[|\]\([^)]*\)", "", DESCRIPTIONS[key]).split(". ")[0] in text, key
    assert "Default: timedelta(days=1)" in text  # RESULT_EXPIRES, written as in settings.py
    assert "jobs.middleware.retries.Retries" in text  # the default MIDDLEWARE list


def test_the_commands_reference_is_each_commands_help(site):
    text = page_text(site, "reference/commands")

    for command in ("jobs_worker", "jobs_beat", "jobs_cleanup"):
        assert f"usage: manage.py {command}" in text
    assert "--prefetch-multiplier" in text
    assert "Count what would be deleted; delete nothing." in text  # jobs_cleanup's --dry-run


def test_the_api_reference_is_generated_from_the_docstrings(site):
    text = page_text(site, "reference/api")

    assert "Make a function a job" in text  # jobs.job.job's docstring
    for name in ("apply_async", "delay_many", "JobResult", "Middleware", "crontab", "running_worker"):
        assert name in text


def test_the_benchmarks_and_changelog_pages_are_the_files_of_the_checkout(site):
    for file, page in (("BENCHMARKS.md", "benchmarks"), ("CHANGELOG.md", "changelog")):
        headings = re.findall(r"^#+ (.+)$", (ROOT / file).read_text(), re.M)
        text = page_text(site, page)
        assert [h for h in headings if re.sub(r"`", "", h) not in text] == [], file


def test_every_page_in_docs_is_built_listed_in_the_nav_or_not(site):
    pages = [p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").rglob("*.md")]
    built = [site / "index.html" if p.name == "index" else site / p / "index.html" for p in pages]
    assert [str(p) for p, html in zip(pages, built, strict=True) if not html.exists()] == []


def test_the_readmes_links_lead_to_files_of_the_checkout():
    targets = LINK.findall((ROOT / "README.md").read_text())
    assert targets
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_install_instructions_name_this_distribution():
    """pip install of another name would install another project (django-jobs is one)."""
    sources = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md"),
               *(ROOT / "jobs").rglob("*.py"), *(ROOT / "jobs_beat").rglob("*.py")]
    named = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in re.findall(r"pip install '?([A-Za-z][\w.-]*)\[", path.read_text())
        if name != DISTRIBUTION
    }
    assert sorted(named) == []
