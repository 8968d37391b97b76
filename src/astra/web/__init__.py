"""The Astra Terminal: the browser UI's static files, served by ``astra.server.terminal``.

Plain ES modules, HTML and CSS with no build step and no third-party code: ``pip install``
needs no Node.js and the page works with no network access (nothing is loaded from a CDN).
``index.html`` is the shell; ``app.js`` signs in and routes (``#/page?query``) to
``pages/<page>.js``; ``lib/`` holds the API client, DOM helpers and the local order book.
"""
