"""HTTP concerns of the ingress that are not Ray: a body limit enforced before parsing, errors
that name the field, and the answer to a caller the door refuses (`keys.Access`)."""

from __future__ import annotations

import json

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cls_ray.serving.keys import AccessDenied, retry_after
from cls_ray.serving.limits import Unavailable


class ErrorBody(BaseModel):
    """Every error the service answers: what went wrong, naming the field or the dependency;
    `errors` lists each bad field of a 422."""

    detail: str
    errors: list[dict] | None = None


_RETRY = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
_ERRORS = {
    400: "Malformed JSON",
    401: "No key, or an unknown or revoked one (X-API-Key)",
    403: "The key's role does not allow this",
    404: "Not found",
    409: "Conflict (a document id holding another text; a version that cannot change so)",
    413: "Body too large",
    422: "A field is invalid or asks for more than the service allows",
    429: "Rate or work budget exceeded",
    503: "A dependency is down or overloaded",
    504: "A dependency did not answer in time",
}
# The error responses every route may give, as the service writes them (the OpenAPI document
# states them instead of FastAPI's default validation-error shape).
RESPONSES: dict = {
    code: {
        "model": ErrorBody,
        "description": text,
        **({"headers": _RETRY} if code in (429, 503, 504) else {}),
    }
    for code, text in _ERRORS.items()
}


class BodyLimit:
    """ASGI middleware that refuses bodies over `max_body_bytes` with 413 before anything
    parses them: at once when `Content-Length` says so, and while reading when a chunked body
    grows past the limit. The limit is a class attribute: the ingress sets it from its config
    (the middleware is installed when the FastAPI app is defined, before any config exists)."""

    max_body_bytes = 1_000_000

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.max_body_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(send, limit)
        seen = 0
        refused = False

        async def limited_receive():
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now; the app sees the client go away and its reply is dropped.
                    refused = True
                    await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        body = json.dumps({"detail": f"body larger than {limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON; 422 naming each bad field otherwise."""
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse(status_code=400, content={"detail": f"malformed JSON: {reason}"})
    message = "; ".join(
        f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'}: {e['msg']}" for e in errors
    )
    return JSONResponse(
        status_code=422,
        content={"detail": message, "errors": jsonable_encoder(errors, exclude={"input"})},
    )


def install(api: FastAPI) -> FastAPI:
    """The body limit and the validation errors on `api`."""
    api.add_middleware(BodyLimit)
    api.add_exception_handler(RequestValidationError, invalid_request)
    return api


def http_error(e: Exception, statuses: dict[type, int], not_found: str = "") -> Exception:
    """The HTTP answer to a remote call's failure by the type of its cause (a Ray task error's
    `cause`): the status `statuses` gives it (a KeyError's message is `not_found` + its key),
    else the error itself, re-raised as it was."""
    cause = getattr(e, "cause", None)
    for kind, status in statuses.items():
        if isinstance(cause, kind):
            if isinstance(cause, KeyError):
                return HTTPException(status, f"{not_found}{cause.args[0] if cause.args else ''}")
            return HTTPException(status, str(cause))
    return e


def unavailable_error(e: Unavailable) -> HTTPException:
    """The HTTP answer to a dependency that failed (503/504 naming it, with `Retry-After`)."""
    headers = {"Retry-After": retry_after(e.retry_after_s)} if e.retry_after_s else None
    return HTTPException(e.status, e.detail, headers=headers)


def access_error(e: AccessDenied) -> HTTPException:
    """The HTTP answer to a refused caller (429 with `Retry-After`)."""
    headers = {"Retry-After": retry_after(e.retry_after_s)} if e.retry_after_s else None
    if e.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "ApiKey"}
    return HTTPException(e.status, e.detail, headers=headers)
