#!/usr/bin/env python3
"""A deliberately lenient backend for Gatehouse's tests (standard library only).

    python3 tests/common/lenient_backend.py PORT LOG

Serves a WSGI app with wsgiref on 127.0.0.1:PORT (0 picks a free port),
prints ``listening on 127.0.0.1:PORT`` (flushed) once bound, and exits 0 on
SIGTERM or SIGINT. One thread per connection; wsgiref answers HTTP/1.0 and
closes the connection after every response.

It reads requests the forgiving way many real backends do, so that a test
can tell whether something the gateway let through would have been
understood as something else behind it:

* method: ``REQUEST_METHOD.upper()``, then overridden (upper-cased) by, in
  this order of precedence, a ``_method`` field of an
  ``application/x-www-form-urlencoded`` body, a ``_method`` query parameter
  (last copy wins) or an ``X-HTTP-Method-Override`` header. Unlike Rails or
  Laravel, which only override POST, overrides apply to every method: the
  worst case. ``HEAD`` is routed like ``GET`` (as Flask, Rails and Express
  do) but answered without a body.
* path: the request target without fragment and query; an absolute-form
  target (``http://host/x``) loses its scheme and authority; then
  percent-decoded and resolved as a relative reference against ``/``: dot
  segments removed, duplicate slashes collapsed, no trailing slash (so
  ``item/x``, ``../admin/x``, ``*/admin/x``, ``/a//b/../admin/`` become
  ``/item/x``, ``/admin/x``, ``/*/admin/x``, ``/a/admin``).
* headers: through the environ's ``HTTP_*`` keys, so ``X_Auth_Admin`` and
  ``X-Auth-Admin`` are the same header; wsgiref joins the copies with ``,``
  in arrival order. A header counts as ``true`` when any comma-separated
  element of it is ``true`` (case-insensitive), again the worst case.
* client ip: the first ``X-Forwarded-For`` entry, else the peer address.

Routes (after that reading):

* ``DELETE /item/<name>`` and ``/admin`` or anything under ``/admin/`` (any
  method): admin handlers, run only when ``X-Auth-Admin`` reads ``true``,
  else 403.
* ``GET /item/<name>``: user handler, runs only when ``X-Auth-User-Id`` is
  present (even empty), else 401.
* anything else: public handler, 200.

Every answer is JSON: ``{"handler", "allowed", "method", "path", "user_id",
"admin", "is_admin", "client_ip", "request_id", "upgrade"}``. Every request
is also appended to LOG as one JSON object per line (flushed before the
answer is sent): those fields plus ``REQUEST_METHOD``, ``PATH_INFO``,
``QUERY_STRING``, ``CONTENT_TYPE``, ``CONTENT_LENGTH``, ``REMOTE_ADDR``,
``SERVER_PROTOCOL``, every ``HTTP_*`` key, ``request_line`` (as received),
``method_override`` (``{"source", "value"}`` or null), ``body`` (the first
4 KiB, latin-1) and ``status``. ``upgrade`` is the ``Upgrade`` header's
value (wsgiref cannot answer 101, so an upgrade gets an ordinary answer).
Requests wsgiref itself refuses (bad request line, ...) are logged with
``handler: "rejected"``; an exception in the app answers 500 JSON, is
logged with ``handler: "error"`` and its traceback goes to stderr.
"""

import json
import re
import signal
import socketserver
import sys
import threading
import traceback
import urllib.parse
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

MAX_BODY = 1 << 20
LOGGED_BODY = 4096

ABSOLUTE_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
ITEM = re.compile(r"^/item/[^/]+$")

_log_lock = threading.Lock()
_log_file = None


def log_record(record):
    line = json.dumps(record, sort_keys=True) + "\n"
    with _log_lock:
        _log_file.write(line)
        _log_file.flush()


def resolve_path(target):
    """The path a lenient backend routes on, from the raw request target."""
    target = target.split("#", 1)[0].split("?", 1)[0]
    target = ABSOLUTE_FORM.sub("", target, count=1)
    path = urllib.parse.unquote(target, "iso-8859-1")
    segments = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def header(environ, name):
    """A header read the lenient way: through its HTTP_* environ key."""
    return environ.get("HTTP_" + name.upper().replace("-", "_"))


def reads_true(value):
    return value is not None and any(part.strip().lower() == "true" for part in value.split(","))


def read_body(environ):
    """The request body: Content-Length bytes, or de-chunked (wsgiref does
    not decode chunked requests itself), at most MAX_BODY."""
    stream = environ["wsgi.input"]
    if "chunked" in (header(environ, "Transfer-Encoding") or "").lower():
        body = b""
        while len(body) <= MAX_BODY:
            size_line = stream.readline(1024)
            if not size_line:
                break
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                break
            if size == 0:
                # Trailers, up to the empty line.
                while True:
                    line = stream.readline(8192)
                    if line in (b"", b"\r\n", b"\n"):
                        break
                break
            body += stream.read(size)
            stream.readline(1024)  # the CRLF after the chunk
        return body
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length <= 0:
        return b""
    return stream.read(min(length, MAX_BODY))


def method_override(environ, query, body):
    content_type = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded" and body:
        form = urllib.parse.parse_qs(body.decode("iso-8859-1"), keep_blank_values=True)
        if form.get("_method"):
            return {"source": "form", "value": form["_method"][-1]}
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if params.get("_method"):
        return {"source": "query", "value": params["_method"][-1]}
    value = header(environ, "X-HTTP-Method-Override")
    if value:
        return {"source": "header", "value": value}
    return None


def app(environ, start_response):
    raw_method = environ.get("REQUEST_METHOD", "")
    target = environ.get("lenient.target", environ.get("PATH_INFO", "/"))
    query = environ.get("QUERY_STRING", "").split("#", 1)[0]
    body = read_body(environ)

    method = raw_method.upper()
    override = method_override(environ, query, body)
    if override and override["value"].strip():
        method = override["value"].strip().upper()
    path = resolve_path(target)
    route_method = "GET" if method == "HEAD" else method

    user_id = header(environ, "X-Auth-User-Id")
    admin = header(environ, "X-Auth-Admin")
    is_admin = reads_true(admin)
    forwarded = header(environ, "X-Forwarded-For")
    client_ip = forwarded.split(",", 1)[0].strip() if forwarded else environ.get("REMOTE_ADDR")

    if (route_method == "DELETE" and ITEM.match(path)) or path == "/admin" or path.startswith("/admin/"):
        handler, allowed, status = "admin", is_admin, ("200 OK" if is_admin else "403 Forbidden")
    elif route_method == "GET" and ITEM.match(path):
        allowed = user_id is not None
        handler, status = "user", ("200 OK" if allowed else "401 Unauthorized")
    else:
        handler, allowed, status = "public", True, "200 OK"

    answer = {
        "handler": handler,
        "allowed": allowed,
        "method": method,
        "path": path,
        "user_id": user_id,
        "admin": admin,
        "is_admin": is_admin,
        "client_ip": client_ip,
        "request_id": environ.get("HTTP_X_REQUEST_ID"),
        "upgrade": header(environ, "Upgrade"),
    }
    record = dict(answer)
    record.update(environ_fields(environ))
    record["method_override"] = override
    record["body"] = body[:LOGGED_BODY].decode("iso-8859-1")
    record["status"] = int(status.split(" ", 1)[0])
    log_record(record)

    payload = json.dumps(answer).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    # No body for HEAD, whatever it was overridden to: the client expects none.
    return [] if raw_method.upper() == "HEAD" else [payload]


def environ_fields(environ):
    fields = {
        key: environ.get(key)
        for key in (
            "REQUEST_METHOD",
            "PATH_INFO",
            "QUERY_STRING",
            "CONTENT_TYPE",
            "CONTENT_LENGTH",
            "REMOTE_ADDR",
            "SERVER_PROTOCOL",
        )
    }
    fields.update({key: value for key, value in environ.items() if key.startswith("HTTP_")})
    fields["request_line"] = environ.get("lenient.request_line")
    return fields


def guarded(inner):
    """Any exception becomes a 500 JSON answer (and a log line + traceback)."""

    def wrapper(environ, start_response):
        try:
            return inner(environ, start_response)
        except Exception as error:  # noqa: BLE001: the point is to catch everything
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            try:
                record = {"handler": "error", "allowed": False, "error": repr(error), "status": 500}
                record.update(environ_fields(environ))
                log_record(record)
            except Exception:  # noqa: BLE001
                traceback.print_exc(file=sys.stderr)
            payload = json.dumps({"error": "internal_error", "message": repr(error)}).encode()
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
                sys.exc_info(),
            )
            return [payload]

    return wrapper


class Handler(WSGIRequestHandler):
    def get_environ(self):
        environ = super().get_environ()
        # The target as http.server kept it (a leading "//" already reduced
        # to "/") and the request line exactly as it arrived.
        environ["lenient.target"] = self.path
        environ["lenient.request_line"] = self.requestline
        return environ

    def send_error(self, code, message=None, explain=None):
        # wsgiref refused the request before the app saw it: log that too.
        try:
            log_record(
                {
                    "handler": "rejected",
                    "allowed": False,
                    "status": int(code),
                    "error": message,
                    "request_line": getattr(self, "requestline", None),
                    "REQUEST_METHOD": getattr(self, "command", None),
                }
            )
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
        super().send_error(code, message, explain)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class Stop(Exception):
    pass


def stop(_signum, _frame):
    raise Stop()


def main():
    global _log_file
    if len(sys.argv) != 3:
        print("usage: lenient_backend.py PORT LOG", file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    _log_file = open(sys.argv[2], "a", encoding="utf-8")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = ThreadingWSGIServer(("127.0.0.1", port), Handler)
    server.set_app(guarded(app))
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except Stop:
        pass
    finally:
        server.server_close()
        with _log_lock:
            _log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
