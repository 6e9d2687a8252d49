"""The Git half of CentralCloud: knowledge export (aggregated patterns as files on a branch
`learned-patterns-YYYYMMDD`, one commit per run that changed something) and template distribution
(the files changed in a templates repository since the last distribution).

Git is driven through its CLI. Commits are made with plumbing (hash-object, mktree, commit-tree,
update-ref) straight into the repository: no working tree is touched and HEAD never moves. A
repository given as a URL is mirrored into CENTRALCLOUD_GIT_CACHE; nothing is pushed anywhere unless
CENTRALCLOUD_EXPORT_PUSH=1, and a pull request is opened only by CENTRALCLOUD_PR_COMMAND or
CENTRALCLOUD_PR_WEBHOOK.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from psycopg.types.json import Jsonb

from orchestrator.centralcloud.settings import CentralCloudSettings
from orchestrator.infra.config import Settings
from orchestrator.infra.db import connect, role_conninfo


class GitJobError(RuntimeError):
    """A Git job could not run (bad configuration, git failure); the message says what to do."""


# -- configuration -----------------------------------------------------------------------------
def cache_dir(s: Settings, cs: CentralCloudSettings) -> Path:
    return cs.git_cache or s.state_dir / "centralcloud" / "git"


# -- git plumbing -------------------------------------------------------------------------------
def git(git_dir: str | Path | None, *args: str, input: bytes | None = None, check: bool = True,
        author: tuple[str, str] = ("CentralCloud", "centralcloud@localhost")) -> str:
    """Run git (against GIT_DIR when given) and return stdout, stripped; AUTHOR (name, email) signs commits."""
    cmd = ["git"] + (["--git-dir", str(git_dir)] if git_dir else []) + list(args)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1],
           "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1]}
    p = subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=300)
    if check and p.returncode != 0:
        raise GitJobError(f"git {' '.join(args[:3])} failed: {p.stderr.decode(errors='replace').strip()[:500]}")
    return p.stdout.decode(errors="replace").strip() if p.returncode == 0 else ""


def git_bytes(git_dir: str | Path, *args: str) -> bytes:
    p = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, timeout=300)
    if p.returncode != 0:
        raise GitJobError(f"git {' '.join(args[:3])} failed: {p.stderr.decode(errors='replace').strip()[:500]}")
    return p.stdout


def resolve_repo(s: Settings, cs: CentralCloudSettings, repo: str, what: str) -> tuple[Path, bool]:
    """The git dir of REPO (a local path, or a URL mirrored into the cache and fetched); (dir, is_local)."""
    if not repo:
        raise GitJobError(f"no {what} repository configured; set CENTRALCLOUD_{what.upper()}_REPO to a path or URL")
    p = Path(repo).expanduser()
    if p.exists():
        gd = git(None, "-C", str(p), "rev-parse", "--absolute-git-dir", check=False)
        if not gd:
            raise GitJobError(f"{repo} is not a Git repository; run `git init` there or point CENTRALCLOUD_{what.upper()}_REPO elsewhere")
        return Path(gd), True
    mirror = cache_dir(s, cs) / re.sub(r"[^A-Za-z0-9._-]+", "_", repo)
    if not mirror.exists():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        git(None, "clone", "--bare", "--quiet", repo, str(mirror))
    else:
        # no --prune: export branches committed here but not pushed must survive the fetch
        git(mirror, "fetch", "--quiet", repo, "+refs/heads/*:refs/heads/*")
    return mirror, False


def _rev(git_dir: Path, ref: str) -> str | None:
    return git(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False) or None


def _blob(git_dir: Path, data: bytes) -> str:
    return git(git_dir, "hash-object", "-w", "--stdin", input=data)


def _mktree(git_dir: Path, entries: list[str]) -> str:
    """A tree object from ls-tree style entries ("mode type sha\tname"), NUL-separated (any file name)."""
    return git(git_dir, "mktree", "-z", input=b"".join(e.encode(errors="surrogateescape") + b"\0" for e in entries))


def _ls_tree(git_dir: Path, tree: str) -> list[str]:
    return [e.decode(errors="surrogateescape") for e in git_bytes(git_dir, "ls-tree", "-z", tree).split(b"\0") if e]


def _put_tree(git_dir: Path, base: str | None, parts: list[str], subtree: str) -> str:
    """The tree BASE with the directory at PARTS replaced by SUBTREE (created if missing)."""
    entries = _ls_tree(git_dir, base) if base else []
    name, rest = parts[0], parts[1:]
    old = next((e for e in entries if e.split("\t", 1)[1] == name), None)
    if rest:
        old_sub = old.split()[2] if old and old.split()[1] == "tree" else None
        subtree = _put_tree(git_dir, old_sub, rest, subtree)
    entries = [e for e in entries if e.split("\t", 1)[1] != name] + [f"040000 tree {subtree}\t{name}"]
    return _mktree(git_dir, entries)


# -- knowledge export ---------------------------------------------------------------------------
def _slug(kind: str | None) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "_", (kind or "unknown").lower()).strip("_.") or "unknown"


def _iso(v) -> str | None:
    return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if v else None


def export_files(patterns: list[dict], day: str) -> dict[str, bytes]:
    """File name -> content for the export directory: per kind a JSON list and a Markdown table, plus
    index.json. Content depends only on the patterns and the day (a second run the same day is a no-op)."""
    by_kind: dict[str, list[dict]] = {}
    for p in patterns:
        by_kind.setdefault(_slug(p["kind"]), []).append({
            "key": p["key"], "kind": p["kind"], "rank": p["rank"], "instances": p["instances"],
            "total_occurrences": p["total_occurrences"], "confidence": float(p["confidence"]),
            "packages": list(p["packages"] or []), "first_seen": _iso(p["first_seen"]), "last_seen": _iso(p["last_seen"])})
    files: dict[str, bytes] = {}
    for kind, rows in sorted(by_kind.items()):
        files[f"{kind}.json"] = (json.dumps(rows, indent=2, sort_keys=True) + "\n").encode()
        md = [f"# Learned patterns: {kind} ({day})", "", "| rank | key | instances | occurrences | confidence | packages |",
              "|---:|---|---:|---:|---:|---|"]
        md += [f"| {r['rank']} | `{r['key']}` | {r['instances']} | {r['total_occurrences']} | {r['confidence']:.4f} | "
               f"{', '.join(r['packages'])} |" for r in rows]
        files[f"{kind}.md"] = ("\n".join(md) + "\n").encode()
    files["index.json"] = (json.dumps({"date": day, "patterns": len(patterns),
                                       "kinds": {k: len(v) for k, v in sorted(by_kind.items())}},
                                      indent=2, sort_keys=True) + "\n").encode()
    return files


def open_pull_request(cs: CentralCloudSettings, repo: str, branch: str, commit: str, artifacts: int,
                      files: list[str]) -> str | None:
    """CENTRALCLOUD_PR_COMMAND (a shell command; CC_REPO, CC_BRANCH, CC_COMMIT in its env; the last line
    of its output is the PR URL) or CENTRALCLOUD_PR_WEBHOOK (POST JSON; `url`/`html_url` of the reply)."""
    cmd, hook = cs.pr_command, cs.pr_webhook
    if cmd:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "CC_REPO": repo, "CC_BRANCH": branch, "CC_COMMIT": commit})
        if p.returncode != 0:
            raise GitJobError(f"CENTRALCLOUD_PR_COMMAND exited {p.returncode}: {p.stderr.strip()[:300]}; fix the command or unset it")
        lines = p.stdout.strip().splitlines()
        return lines[-1].strip() if lines else None
    if hook:
        body = json.dumps({"repo": repo, "branch": branch, "commit": commit, "artifacts_count": artifacts,
                           "files": files, "title": f"Learned patterns {branch.rsplit('-', 1)[-1]}"}).encode()
        req = urllib.request.Request(hook, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - operator-configured URL
                raw = r.read()
        except OSError as e:
            raise GitJobError(f"CENTRALCLOUD_PR_WEBHOOK {hook} failed: {e}; check the URL or unset it") from e
        try:
            reply = json.loads(raw or b"{}")
        except ValueError:
            return None
        return reply.get("html_url") or reply.get("url") if isinstance(reply, dict) else None
    return None


def knowledge_export(s: Settings, today: datetime | None = None, cs: CentralCloudSettings | None = None) -> str:
    """Write the aggregated patterns into the export repository on branch learned-patterns-YYYYMMDD."""
    cs = cs or CentralCloudSettings.from_env()
    repo = cs.export_repo or ""
    git_dir, _local = resolve_repo(s, cs, repo, "export")
    sub = [p for p in cs.export_dir.split("/") if p]
    if not sub or any(p in (".", "..") for p in sub):
        raise GitJobError("CENTRALCLOUD_EXPORT_DIR must be a relative directory such as learned-patterns")
    day = (today or datetime.now(UTC)).strftime("%Y%m%d")
    branch = f"learned-patterns-{day}"
    with connect(role_conninfo(s, "centralcloud", "svc_centralcloud")) as c:
        pats = c.execute("SELECT * FROM centralcloud.patterns ORDER BY rank").fetchall()
        files = export_files(pats, f"{day[:4]}-{day[4:6]}-{day[6:]}")
        subtree = _mktree(git_dir, [f"100644 blob {_blob(git_dir, data)}\t{name}" for name, data in sorted(files.items())])
        tip = _rev(git_dir, f"refs/heads/{branch}")
        parent = tip or _rev(git_dir, "HEAD")
        base_tree = git(git_dir, "rev-parse", f"{parent}^{{tree}}") if parent else None
        tree = _put_tree(git_dir, base_tree, sub, subtree)
        paths = [f"{'/'.join(sub)}/{n}" for n in sorted(files)]
        if tip and tree == base_tree:
            # nothing changed; announce the tip only if an earlier run stopped before announcing it
            if c.execute("SELECT 1 FROM centralcloud.exports WHERE branch = %s AND commit = %s", (branch, tip)).fetchone():
                return f"skipped: {branch} already has these {len(pats)} patterns at {tip[:12]}"
            commit = tip
        else:
            msg = f"Learned patterns {day}: {len(pats)} patterns from CentralCloud\n"
            commit = git(git_dir, "commit-tree", tree, *(["-p", parent] if parent else []), "-m", msg,
                         author=(cs.git_name, cs.git_email))
            git(git_dir, "update-ref", f"refs/heads/{branch}", commit, tip or "0" * 40)
        pushed = False
        if cs.export_push:
            remote = repo if not _local else cs.export_remote
            git(git_dir, "push", "--quiet", remote, f"refs/heads/{branch}:refs/heads/{branch}")
            pushed = True
        pr = open_pull_request(cs, repo, branch, commit, len(pats), paths)
        n = c.execute("SELECT centralcloud.record_export(%s, %s, %s, %s, %s, %s, %s) AS n",
                      (repo, branch, commit, len(pats), paths, pushed, pr)).fetchone()["n"]
    return (f"ok: {len(pats)} patterns in {len(files)} files committed to {branch} at {commit[:12]}"
            f"{' and pushed' if pushed else ''}{f', PR {pr}' if pr else ''}; learning_exported sent to {n} instance(s)")


# -- template distribution ----------------------------------------------------------------------
def _file_entry(git_dir: Path, commit: str, path: str, rel: str) -> dict:
    data = git_bytes(git_dir, "cat-file", "blob", f"{commit}:{path}")
    entry = {"path": rel, "hash": hashlib.sha256(data).hexdigest()}
    try:
        entry["content"] = data.decode("utf-8")
    except UnicodeDecodeError:
        entry["content"], entry["encoding"] = base64.b64encode(data).decode(), "base64"
    return entry


def template_distribution(s: Settings, cs: CentralCloudSettings | None = None) -> str:
    """Publish templates_updated with exactly the files changed since the last distributed commit."""
    cs = cs or CentralCloudSettings.from_env()
    repo = cs.templates_repo or ""
    git_dir, _local = resolve_repo(s, cs, repo, "templates")
    ref = cs.templates_ref
    sub = cs.templates_dir.strip("/")
    commit = _rev(git_dir, ref)
    if not commit:
        raise GitJobError(f"{repo}: {ref} is not a commit; set CENTRALCLOUD_TEMPLATES_REF to a branch or commit")
    spec = ["--", sub] if sub else []
    with connect(role_conninfo(s, "centralcloud", "svc_centralcloud")) as c:
        last = c.execute("SELECT centralcloud.last_template_commit(%s) AS c", (repo,)).fetchone()["c"]
        if last == commit:
            return f"skipped: templates already distributed at {commit[:12]}"
        changed: list[str] = []
        deleted: list[str] = []
        if last and _rev(git_dir, last):
            out = git_bytes(git_dir, "diff", "--name-status", "-z", "--no-renames", last, commit, *spec).split(b"\0")
            for status, path in zip(out[0::2], out[1::2], strict=False):
                (deleted if status.decode().startswith("D") else changed).append(path.decode())
        else:
            changed = [p.decode() for p in git_bytes(git_dir, "ls-tree", "-r", "-z", "--name-only", commit, *spec).split(b"\0") if p]
        rel = (lambda p: p[len(sub) + 1:]) if sub else (lambda p: p)
        files = [_file_entry(git_dir, commit, p, rel(p)) for p in sorted(changed)]
        msgs = c.execute("SELECT centralcloud.record_templates(%s, %s, %s, %s) AS n",
                         (repo, commit, Jsonb(files), [rel(p) for p in sorted(deleted)])).fetchone()["n"]
    since = f"since {last[:12]}" if last else "(first distribution)"
    return (f"ok: {len(files)} changed and {len(deleted)} deleted template file(s) at {commit[:12]} {since}; "
            f"{msgs} message(s) per instance")


