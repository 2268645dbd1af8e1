"""Serve the prebuilt OHIF viewer and proxy its DICOMweb requests to Orthanc, on one origin.

``python -m tests.viewers.serve PORT ORTHANC_URL`` serves ``tests/viewers/ohif`` (the dist/
of the npm package ``@ohif/app``) with its single-page routes falling back to index.html, an
``app-config.js`` whose only data source is ``/dicom-web`` of this server, and forwards
``/dicom-web/...`` to ``ORTHANC_URL/dicom-web/...`` (Orthanc's DICOMweb plugin). One origin:
no CORS set-up in Orthanc. Loopback only.
"""

from __future__ import annotations

import http.server
import mimetypes
import sys
import urllib.error
import urllib.request
from pathlib import Path

DIST = Path(__file__).resolve().parent / "ohif"

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc DICOMweb (test)',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video,pdf',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")


class Handler(http.server.BaseHTTPRequestHandler):
    """Static files, the app config, and the DICOMweb proxy."""

    orthanc = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write("%s\n" % (format % args))

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else None
        forward = {k: v for k, v in self.headers.items()
                   if k.lower() in ("accept", "content-type", "range")}
        request = urllib.request.Request(self.orthanc + self.path, data=data,
                                         headers=forward, method=self.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                status = response.status
                content_type = response.headers.get("Content-Type", "application/octet-stream")
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
            content_type = exc.headers.get("Content-Type", "text/plain")
        self._send(status, body, content_type)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/dicom-web/"):
            self._proxy()
            return
        path = self.path.split("?", 1)[0]
        if path == "/app-config.js":
            self._send(200, APP_CONFIG.encode(), "text/javascript")
            return
        file = (DIST / path.lstrip("/")).resolve()
        if not file.is_relative_to(DIST) or not file.is_file():
            file = DIST / "index.html"  # single-page app routes
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._send(200, file.read_bytes(), content_type, {
            # SharedArrayBuffer (cornerstone's volume loading) needs cross-origin isolation
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Embedder-Policy": "require-corp",
        })

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        if self.path.startswith("/dicom-web/"):
            self._proxy()
        else:
            self._send(405, b"", "text/plain")


def main() -> None:
    """Serve until terminated."""
    port, orthanc = int(sys.argv[1]), sys.argv[2].rstrip("/")
    Handler.orthanc = orthanc
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
