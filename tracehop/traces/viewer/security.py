"""The security headers on every answer of the query port, viewer pages and query API alike.

Apart from the viewer's Flask app (app.py) so that the query API, which answers without Flask, adds the
same ones without importing it.
"""

# Scripts and styles only from the page's own files: an injected <script> or style="" does nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
