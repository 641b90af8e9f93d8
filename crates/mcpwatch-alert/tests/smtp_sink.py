"""A real SMTP server for the email tests (aiosmtpd), on 127.0.0.1:PORT.

Prints READY once it listens, then one JSON line per message received:
{"from": ..., "to": [...], "data": "<the whole message>"}. Exits when stdin closes.
"""

import json
import sys

from aiosmtpd.controller import Controller


class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 OK queued as mcpwatch-test"


def main():
    port = int(sys.argv[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
