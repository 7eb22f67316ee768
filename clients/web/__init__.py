"""``blobnet web``: play Blob in the browser against bots and models, see what the model thinks of
each move, and watch a training run live (``clients.web.server``)."""

from clients.web.server import WebConfig, WebServer, make_app, serve, web_command

__all__ = ["WebConfig", "WebServer", "make_app", "serve", "web_command"]
