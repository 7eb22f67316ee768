"""BlobNet: self-play training for Blob (Oh Hell). The rules layer imports neither torch nor asyncio."""

from blobnet.bots import HeuristicBot, RandomBot
from blobnet.rules import Game, IllegalMove, Round, View
from blobnet.views import determinize

__all__ = ["Game", "HeuristicBot", "IllegalMove", "RandomBot", "Round", "View", "determinize"]
