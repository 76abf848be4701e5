"""The baseline: a bare Starlette app answering one fixed TwiML menu (no parsing, no state)."""

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

MENU = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Thanks for calling Acme.</Say>'
    '<Gather action="http://127.0.0.1/voice/support_line/action?state=main_menu&amp;step=1" '
    'finishOnKey="#" input="dtmf speech" method="POST" numDigits="1" timeout="5">'
    "<Say>For sales press 1. For support press 2. To leave a message press 3.</Say></Gather>"
    '<Redirect method="POST">http://127.0.0.1/voice/support_line/action?state=main_menu&amp;'
    "step=1&amp;input=none</Redirect></Response>"
)


async def menu(request):
    return Response(MENU, media_type="text/xml")


app = Starlette(routes=[Route("/{path:path}", menu, methods=["POST"])])
