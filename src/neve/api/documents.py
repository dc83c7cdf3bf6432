"""Documents: upload (multipart), list, details, delete and re-index. Uploads are kept under the
data directory, so they can be indexed again: each in a folder named by its content and
groups, so two different uploads of one file name are two documents, while sending the
same file again changes nothing. Replacing what went before is asked for (`replace`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi import Path as PathParam

from neve.api.auth import caller
from neve.api.grounding import access_of
from neve.api.state import state_of
from neve.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from neve.protocol.neve import DocumentDetails, DocumentList, DocumentOut
from neve.rag.index import Access
from neve.rag.ingest import doc_id
from neve.rag.loaders import SUFFIXES, kind_of
from neve.rag.referrals import referred_as
from neve.rag.service import Rag

router = APIRouter(prefix="/v1/documents")
DocumentId = Annotated[str, PathParam(min_length=1)]
READ_BYTES = 1024 * 1024
# A stored name's bytes at most: file systems allow 255, and a suffix is added meanwhile.
NAME_BYTES = 160


def _out(row: dict[str, Any]) -> DocumentOut:
    return DocumentOut(id=row["doc_id"], **{k: v for k, v in row.items() if k != "doc_id"})


def _safe_name(name: str) -> str:
    """The file name alone, tamed, and short enough to store (its type suffix kept)."""
    base = Path(name.replace("\\", "/")).name
    safe = re.sub(r"[^\w.\- ]", "_", base).strip(" .") or "upload"
    if len(safe.encode()) <= NAME_BYTES:
        return safe
    suffix = Path(safe).suffix if len(Path(safe).suffix) <= 16 else ""
    room = NAME_BYTES - len(suffix.encode())
    return safe.encode()[:room].decode("utf-8", "ignore").rstrip(" .") + suffix


def _folder(uploads: Path, content: bytes, groups: list[str] | None) -> Path:
    """Where an upload is kept: the same content with the same groups lands in the same
    place (a re-upload is idempotent); anything else gets a place of its own."""
    key = hashlib.sha256(content)
    key.update("\0".join(groups or []).encode())
    return uploads / key.hexdigest()[:16]


def _uploads(rag: Rag) -> Path:
    """The folder uploads are kept in, as the index's paths name it (resolved)."""
    return (rag.settings.rag_path / "uploads").resolve()


def _forget_file(path: Path, uploads: Path) -> None:
    """Remove an upload's file and its folder, once no document uses them."""
    path.unlink(missing_ok=True)
    if path.parent != uploads and not any(path.parent.iterdir()):
        path.parent.rmdir()


@router.post("", status_code=201, response_model=None)
async def upload(
    request: Request,
    files: Annotated[list[UploadFile], File(description="one or more documents", min_length=1)],
    groups: Annotated[str | None, Form(description="comma-separated groups")] = None,
    replace: Annotated[
        bool,
        Form(
            description="replace earlier uploads of the same file name (admins); else an "
            "upload never replaces another"
        ),
    ] = False,
) -> DocumentList:
    who = caller(request)
    given = sorted({g.strip() for g in groups.split(",") if g.strip()}) if groups else None
    if given and not who.is_admin and not set(given) <= who.groups:
        raise Forbidden("you can only give documents groups you belong to", param="groups")
    if replace and not who.is_admin:
        raise Forbidden("replacing documents needs an admin key", param="replace")
    rag = state_of(request).rag
    limit = rag.settings.rag_max_upload_bytes
    uploads = _uploads(rag)
    received: list[tuple[Path, bytes]] = []
    for upload in files:
        name = _safe_name(upload.filename or "")
        if kind_of(Path(name)) is None:
            kinds = ", ".join(sorted(SUFFIXES))
            raise BadRequest(f"{name}: unsupported file type (use {kinds})",
                             code="unsupported_file", param="files")  # fmt: skip
        data = bytearray()
        while piece := await upload.read(READ_BYTES):
            data += piece
            if len(data) > limit:
                raise TooLarge(
                    f"{name} is larger than the limit of {limit} bytes "
                    "(setting rag_max_upload_bytes)", code="file_too_large", param="files",
                )  # fmt: skip
        content = bytes(data)
        received.append((_folder(uploads, content, given) / name, content))
    # Every file is checked before any is written: a refused upload stores nothing.
    for path, content in received:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(content)
        partial.replace(path)
    paths = [p for p, _ in received]
    await asyncio.to_thread(rag.ingester().run, paths, groups=given)
    if replace:  # only now that the new ones are in: a failed upload replaces nothing
        names = {p.name for p in paths}
        older = [d for d in rag.index.list_documents(Access(everything=True))
                 if Path(d["path"]).name in names and Path(d["path"]) not in paths
                 and Path(d["path"]).is_relative_to(uploads)]  # fmt: skip
        await asyncio.to_thread(rag.remove, [d["doc_id"] for d in older])
        for d in older:
            _forget_file(Path(d["path"]), uploads)
    rows = [rag.index.document(doc_id(p), Access(everything=True)) for p in paths]
    return DocumentList(data=[_out(r) for r in rows if r is not None])


@router.get("")
def list_documents(request: Request) -> DocumentList:
    rag = state_of(request).rag
    return DocumentList(
        data=[_out(r) for r in rag.index.list_documents(access_of(caller(request)))]
    )


@router.get("/{document_id}")
def details(document_id: DocumentId, request: Request) -> DocumentDetails:
    """A document, with the texts of the links to it from the pages the caller may read."""
    rag = state_of(request).rag
    row = rag.index.document(document_id, access_of(caller(request)))
    if row is None:
        raise NotFound(f"no document {document_id!r}")
    return DocumentDetails(
        **_out(row).model_dump(), referred_as=referred_as(rag.index, document_id)
    )


@router.delete("/{document_id}", status_code=204, response_model=None)
def delete(document_id: DocumentId, request: Request) -> Response:
    rag = state_of(request).rag
    who = caller(request)
    row = rag.index.document(document_id, access_of(who))
    if row is None:
        raise NotFound(f"no document {document_id!r}")
    if not who.is_admin:
        raise Forbidden("deleting documents needs an admin key")
    rag.remove([document_id])
    path, uploads = Path(row["path"]), _uploads(rag)
    if path.is_relative_to(uploads):
        _forget_file(path, uploads)
    return Response(status_code=204)


@router.post("/{document_id}/reindex", response_model=None)
async def reindex(document_id: DocumentId, request: Request) -> DocumentOut:
    rag = state_of(request).rag
    who = caller(request)
    row = rag.index.document(document_id, access_of(who))
    if row is None:
        raise NotFound(f"no document {document_id!r}")
    path = Path(row["path"])
    if not path.is_file():
        raise Conflict(f"{path} is gone; delete the document or restore the file",
                       code="file_missing")  # fmt: skip
    rag.index.remove([document_id])  # read afresh even when unchanged
    await asyncio.to_thread(rag.ingester().run, [path], groups=row["groups"])
    fresh = rag.index.document(document_id, Access(everything=True))
    assert fresh is not None
    return _out(fresh)
