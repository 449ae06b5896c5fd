"""The service advisor's pages (/ui): see `app`."""

from autopdm.serving.auth import UI_PATH
from autopdm.serving.ui.app import create_app

MOUNT = UI_PATH  # where the service mounts the pages (the API's middleware leaves it to them); cookies are scoped to it

__all__ = ["MOUNT", "create_app"]
