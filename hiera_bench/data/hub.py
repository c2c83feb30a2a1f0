"""``hf:REPO[@REVISION]``: the validation files of a hub dataset, through the HF cache.

``load_dataset("ILSVRC/imagenet-1k", split="validation")`` would fetch every split (datasets#6793),
about 150 GB, so only the validation files are fetched with ``snapshot_download`` and then read by
the local layout they are in (parquet for ``ILSVRC/imagenet-1k``, tar shards for
``timm/imagenet-1k-wds``). ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` work as everywhere in the HF stack.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..errors import UserError
from .base import ClassIndex, Layout, get_layout, register_layout

#: Validation files of the supported repo formats: hub parquet and timm's WebDataset shards.
VALIDATION_PATTERNS = ["data/validation-*.parquet", "imagenet1k-validation-*.tar"]
#: Local layouts a snapshot may hold, tried in this order.
SNAPSHOT_LAYOUTS = ("parquet", "webdataset")


def parse_hub_location(location: str) -> tuple[str, str | None]:
    """``hf:owner/name[@revision]`` -> (repo id, revision)."""
    if not location.startswith("hf:") and Path(location).exists():
        raise UserError(f"--data {location} is a local path, not a hub dataset (hf:OWNER/NAME): drop --data-format hub, "
                        "or give the format of the local files")
    spec = location.removeprefix("hf:")
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"--data {location}: write a hub dataset as hf:OWNER/NAME[@REVISION], e.g. hf:ILSVRC/imagenet-1k")
    return repo, revision or None


def fetch_validation(repo: str, revision: str | None, local_only: bool = False) -> Path:
    """Download (or find in the HF cache; only there with ``local_only``) the validation files of ``repo``;
    the snapshot folder."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    advice = "or point --data at a local copy (class folders, parquet, tar shards, flat val folder)"
    try:
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision,
                                      allow_patterns=VALIDATION_PATTERNS, local_files_only=local_only))
    except GatedRepoError:
        raise UserError(f"hf:{repo} is gated: accept its terms on https://huggingface.co/datasets/{repo} and log in "
                        f"with `hf auth login`, {advice}") from None
    except RepositoryNotFoundError:
        raise UserError(f"hf:{repo} is not a dataset on the hub (or needs a login), {advice}") from None
    except LocalEntryNotFoundError:
        raise UserError(f"hf:{repo} is not in the HF cache and the hub cannot be reached (HF_HUB_OFFLINE=1 or no "
                        f"network): download it once online, {advice}") from None
    except HfHubHTTPError as exc:
        raise UserError(f"hf:{repo}: the hub answered {str(exc).splitlines()[0]}; {advice}") from None


@register_layout("hub", priority=0)
class HubLayout:
    description = "a hub dataset: hf:OWNER/NAME[@REVISION] (validation files only, via the HF cache)"

    def detect(self, location: str) -> bool:
        return location.startswith("hf:")

    def load(self, location: str, classes: ClassIndex) -> datasets.Dataset:
        repo, revision = parse_hub_location(location)
        snapshot = fetch_validation(repo, revision)
        return _snapshot_layout(repo, snapshot).load(str(snapshot), classes)

    def near_miss(self, location: str) -> str | None:
        """A hub-cache entry given as a folder (``.../hub/datasets--ILSVRC--imagenet-1k``): its repo, through the cache."""
        root = Path(location)
        if not (root.name.startswith("datasets--") and (root / "snapshots").is_dir()):
            return None
        repo = root.name.removeprefix("datasets--").replace("--", "/", 1)
        return (f"--data {root} is the HF cache's copy of {repo}; give --data hf:{repo} "
                f"(with HF_HUB_CACHE={root.parent} if that is not your cache)")

    def data_files(self, location: str) -> list[str]:
        """The snapshot's validation files, found in the HF cache only (``load`` put them there)."""
        repo, revision = parse_hub_location(location)
        snapshot = fetch_validation(repo, revision, local_only=True)
        return _snapshot_layout(repo, snapshot).data_files(str(snapshot))


def _snapshot_layout(repo: str, snapshot: Path) -> Layout:
    """The local layout the snapshot's validation files are in."""
    for name in SNAPSHOT_LAYOUTS:
        layout = get_layout(name)
        if layout.detect(str(snapshot)):
            return layout
    raise UserError(f"hf:{repo}: the cached snapshot {snapshot} holds no validation files "
                    f"({' or '.join(VALIDATION_PATTERNS)}); download them online or give --data a local copy")
