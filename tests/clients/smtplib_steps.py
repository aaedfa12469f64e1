"""Drive blackhole with Python's smtplib one command at a time, timing each.

Usage:
    smtplib_steps.py PORT [--source IP] [--sessions N] STEP...

Each session connects to 127.0.0.1:PORT (from IP if given), then runs the STEPs in order;
N sessions (default 1) run one after the other, each on its own connection.

Steps (ARG parts are optional, after a colon):
    ehlo[:NAME] helo[:NAME] mail[:ADDRESS] rcpt[:ADDRESS] rset noop vrfy[:ADDRESS] quit
    auth[:USER]          login() with password "pw" and the mechanism smtplib picks
    data[:SIZE]          DATA, then (after a 354) a message of SIZE bytes (default 100)
    sendmail[:SIZE[:N]]  sendmail() of a SIZE-byte message to N recipients r1@... rN@...

Each step prints one line, "SESSION STEP OUTCOME MILLISECONDS [DETAIL]" (data prints a
second, "SESSION message ..." for the reply after the message), and the connection prints
"SESSION connect ..." for its greeting. OUTCOME is the reply code, or for sendmail "sent"
(DETAIL: the refused recipients, ADDRESS=CODE,...) or the exception smtplib raised with its
code when it has one (SMTPSenderRefused:451). A step that finds the connection gone prints
"SMTPServerDisconnected" and ends the session.
"""

import smtplib
import sys
import time

SENDER = "a@example.com"


def message(size):
    """A message of exactly `size` bytes: three headers, then lines of at most 101 bytes."""
    head = "From: a@example.com\r\nTo: b@example.net\r\nSubject: steps\r\n\r\n"
    body = size - len(head)
    if body < 0 or body == 1:
        raise SystemExit(f"no message is {size} bytes: give {len(head)}, or {len(head) + 2} or more")
    lines, rest = divmod(body, 100)
    if rest == 1:
        # A line is at least its CRLF: the last whole line takes the odd byte.
        lines, rest = lines - 1, 101
    tail = "y" * (rest - 2) + "\r\n" if rest else ""
    return head + ("x" * 98 + "\r\n") * lines + tail


def split(step):
    name, _, arg = step.partition(":")
    return name, arg


def sendmail(smtp, arg):
    size, _, count = arg.partition(":")
    recipients = [f"r{n}@example.net" for n in range(1, int(count or 1) + 1)]
    try:
        refused = smtp.sendmail(SENDER, recipients, message(int(size or 100)))
    except smtplib.SMTPRecipientsRefused as e:
        refused = ",".join(f"{r}={c}" for r, (c, _) in sorted(e.recipients.items()))
        return f"SMTPRecipientsRefused {refused}"
    detail = ",".join(f"{r}={c}" for r, (c, _) in sorted(refused.items()))
    return f"sent {detail}".rstrip()


def data(smtp, arg, session, started):
    """DATA and its message, as smtplib.data() does it, with each reply shown on its own."""
    code, _ = smtp.docmd("data")
    show(session, "data", code, started)
    if code != 354:
        return None
    started = time.monotonic()
    text = smtplib.quotedata(message(int(arg or 100)))
    smtp.send(text.encode("ascii") + b"\r\n.\r\n")
    code, _ = smtp.getreply()
    show(session, "message", code, started)
    return None


def run_step(smtp, step, session, started):
    """The step's outcome (a code, or "sent ..."), or None if it showed its own."""
    name, arg = split(step)
    commands = {
        "ehlo": lambda: smtp.ehlo(arg or "client.example"),
        "helo": lambda: smtp.helo(arg or "client.example"),
        "mail": lambda: smtp.mail(arg or SENDER),
        "rcpt": lambda: smtp.rcpt(arg or "b@example.net"),
        "rset": smtp.rset,
        "noop": smtp.noop,
        "vrfy": lambda: smtp.verify(arg or "b@example.net"),
        "quit": lambda: smtp.docmd("quit"),
        "auth": lambda: smtp.login(arg or "alice", "pw"),
    }
    if name == "data":
        return data(smtp, arg, session, started)
    if name == "sendmail":
        return sendmail(smtp, arg)
    code, _ = commands[name]()
    return code


def show(session, name, outcome, started):
    elapsed = round((time.monotonic() - started) * 1000)
    code, _, detail = str(outcome).partition(" ")
    print(" ".join(str(part) for part in (session, name, code, elapsed, detail) if part != ""),
          flush=True)


def session(port, source, number, steps):
    smtp = smtplib.SMTP(timeout=20, source_address=(source, 0) if source else None)
    started = time.monotonic()
    try:
        code, _ = smtp.connect("127.0.0.1", port)
    except smtplib.SMTPServerDisconnected:
        show(number, "connect", "SMTPServerDisconnected", started)
        return
    show(number, "connect", code, started)
    for step in steps:
        name, _ = split(step)
        started = time.monotonic()
        try:
            outcome = run_step(smtp, step, number, started)
        except smtplib.SMTPServerDisconnected:
            show(number, name, "SMTPServerDisconnected", started)
            return
        except smtplib.SMTPResponseException as e:
            # smtplib closes the connection itself after a 421, so the session goes on
            # (and finds it gone) as a program's next attempt would.
            outcome = f"{type(e).__name__}:{e.smtp_code}"
        if outcome is not None:
            show(number, name, outcome, started)
    smtp.close()


def main(argv):
    port, args = int(argv[1]), argv[2:]
    source, sessions = None, 1
    while args and args[0].startswith("--"):
        option, value, args = args[0], args[1], args[2:]
        if option == "--source":
            source = value
        elif option == "--sessions":
            sessions = int(value)
        else:
            raise SystemExit(f"unknown option {option}")
    for number in range(1, sessions + 1):
        session(port, source, number, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
