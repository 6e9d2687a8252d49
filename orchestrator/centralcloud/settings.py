"""CentralCloud's settings, read once from the environment (CENTRALCLOUD_*): the Git jobs' targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.infra.settings import Env


@dataclass(frozen=True)
class CentralCloudSettings:
    export_repo: str | None = None      # CENTRALCLOUD_EXPORT_REPO: where knowledge-export commits
    export_dir: str = "learned-patterns"  # CENTRALCLOUD_EXPORT_DIR: the folder inside it
    export_push: bool = False           # CENTRALCLOUD_EXPORT_PUSH: push the branch
    export_remote: str = "origin"       # CENTRALCLOUD_EXPORT_REMOTE: the remote of a local export repo
    pr_command: str | None = None       # CENTRALCLOUD_PR_COMMAND: opens a pull request (CC_REPO, CC_BRANCH, CC_COMMIT)
    pr_webhook: str | None = None       # CENTRALCLOUD_PR_WEBHOOK: or POST the proposal there
    templates_repo: str | None = None   # CENTRALCLOUD_TEMPLATES_REPO: what template-distribution watches
    templates_ref: str = "HEAD"         # CENTRALCLOUD_TEMPLATES_REF
    templates_dir: str = ""             # CENTRALCLOUD_TEMPLATES_DIR
    git_cache: Path | None = None       # CENTRALCLOUD_GIT_CACHE: clones of remote repositories
    git_name: str = "CentralCloud"      # CENTRALCLOUD_GIT_NAME / _EMAIL: the commits' author
    git_email: str = "centralcloud@localhost"

    @classmethod
    def from_env(cls, env=None) -> CentralCloudSettings:
        e = Env(env)
        cache = e.str("CENTRALCLOUD_GIT_CACHE")
        return cls(export_repo=e.str("CENTRALCLOUD_EXPORT_REPO"), export_dir=e.str("CENTRALCLOUD_EXPORT_DIR", "learned-patterns"),
                   export_push=e.bool("CENTRALCLOUD_EXPORT_PUSH", False),
                   export_remote=e.str("CENTRALCLOUD_EXPORT_REMOTE", "origin"),
                   pr_command=e.str("CENTRALCLOUD_PR_COMMAND"), pr_webhook=e.str("CENTRALCLOUD_PR_WEBHOOK"),
                   templates_repo=e.str("CENTRALCLOUD_TEMPLATES_REPO"),
                   templates_ref=e.str("CENTRALCLOUD_TEMPLATES_REF", "HEAD"),
                   templates_dir=e.str("CENTRALCLOUD_TEMPLATES_DIR", ""),
                   git_cache=Path(cache) if cache else None,
                   git_name=e.str("CENTRALCLOUD_GIT_NAME", "CentralCloud"),
                   git_email=e.str("CENTRALCLOUD_GIT_EMAIL", "centralcloud@localhost"))

    def configured(self) -> list[str]:
        """The Git jobs that have a target."""
        return [j for j, on in (("knowledge-export", self.export_repo), ("template-distribution", self.templates_repo))
                if on]
