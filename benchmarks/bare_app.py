"""The baseline: a bare Starlette app answering fixed TwiML (no parsing, no state).

The first request of a call gets the menu; its Gather and the action it posts to get a fixed
goodbye, so a simulated caller walks two requests, as on a real menu.
"""

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

MENU = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Thanks for calling Acme.</Say>'
    '<Gather action="/voice/support_line/action?state=main_menu&amp;step=1" '
    'finishOnKey="#" input="dtmf speech" method="POST" numDigits="1" timeout="5">'
    "<Say>For sales press 1. For support press 2. To leave a message press 3.</Say></Gather>"
    '<Redirect method="POST">/voice/support_line/action?state=main_menu&amp;'
    "step=1&amp;input=none</Redirect></Response>"
)


GOODBYE = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Goodbye.</Say><Hangup /></Response>'


async def menu(request):
    if request.url.path.endswith("/action"):
        return Response(GOODBYE, media_type="text/xml")
    return Response(MENU, media_type="text/xml")


async def healthz(request):
    # What the wrk script sends when it has no webhook to send (see wrk_load.py).
    return Response("ok", media_type="text/plain")


app = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/{path:path}", menu, methods=["POST"]),
    ]
)
