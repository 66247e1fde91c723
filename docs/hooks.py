"""mkdocs hooks: the repository's README.md is the site's home page and benchmarks/README.md a page of it.

Every page's links are written for a reader of the repository (README.md links ``docs/worker.md``, a page in
docs/ links ``../README.md``). Each relative link is resolved against its file's place in the repository and
rewritten to the target's place in the site, where mkdocs checks it: a link to anything that is not a page or
an image of the site (a source file, a missing page or heading) fails the strict build.
"""
from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

OUTSIDE = {"README.md": "index.md", "benchmarks/README.md": "benchmarks.md"}  # repository path -> site path
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of [text](target) and ![alt](target)


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for repo_path, site_path in OUTSIDE.items():
        files.append(File.generated(config, site_path, abs_src_path=str(_root(config) / repo_path)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    docs = Path(config.docs_dir).resolve().relative_to(_root(config).resolve()).as_posix()
    site_path = page.file.src_uri
    repo_path = {v: k for k, v in OUTSIDE.items()}.get(site_path, f"{docs}/{site_path}")

    def to_site(match: re.Match[str]) -> str:
        target = match.group(1)
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            return match.group(0)  # a web address, an anchor on this page, an absolute path
        in_repo = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), parts.path))
        if in_repo in OUTSIDE:
            in_site = OUTSIDE[in_repo]
        elif in_repo.startswith(f"{docs}/"):
            in_site = in_repo.removeprefix(f"{docs}/")
        else:
            return match.group(0)  # not part of the site: mkdocs reports it
        relative = posixpath.relpath(in_site, posixpath.dirname(site_path) or ".")
        return f"]({relative}{'#' + parts.fragment if parts.fragment else ''})"

    return LINK.sub(to_site, markdown)
