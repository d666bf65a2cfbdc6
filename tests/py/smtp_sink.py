"""A local SMTP sink for the end-to-end tests: accepts every message and writes it to a directory.

Usage: smtp_sink.py HOST PORT DIR

Each message lands as DIR/<n>.eml (written to a .tmp file first, then renamed, so a reader never
sees half a message), preceded by `X-Mail-From:` and `X-Rcpt-To:` lines with the envelope. Runs
until SIGTERM/SIGINT. Needs aiosmtpd (pip install aiosmtpd).
"""

import itertools
import os
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count()

    async def handle_DATA(self, server, session, envelope):
        name = "%d-%d" % (time.time_ns(), next(self.counter))
        tmp = os.path.join(self.directory, name + ".tmp")
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        with open(tmp, "wb") as f:
            f.write(("X-Mail-From: %s\r\n" % envelope.mail_from).encode("utf-8"))
            f.write(("X-Rcpt-To: %s\r\n" % ", ".join(envelope.rcpt_tos)).encode("utf-8"))
            f.write(content)
        os.rename(tmp, os.path.join(self.directory, name + ".eml"))
        return "250 Message accepted for delivery"


def main():
    host, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname=host, port=port)
    controller.start()
    print("smtp sink listening on %s:%d, writing to %s" % (host, port, directory), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
