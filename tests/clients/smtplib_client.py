"""Talk to blackhole with Python's smtplib, the way a real program sends mail.

Usage:
    smtplib_client.py PORT [smtps|starttls CAFILE] send
    smtplib_client.py PORT [smtps|starttls CAFILE] login USER PASSWORD
    smtplib_client.py PORT [smtps|starttls CAFILE] auth MECHANISM USER PASSWORD initial|noinitial

smtps:    SMTP_SSL, TLS from the first byte; starttls: SMTP, then starttls(). Either verifies
          the server's certificate against CAFILE (and its name, 127.0.0.1) and prints
          "TLS VERSION" (e.g. "TLS TLSv1.3") once the connection is encrypted.
send:  sendmail() one message; prints "SENT".
login: login(), letting smtplib pick the mechanism from the EHLO reply.
auth:  auth() with one mechanism forced (PLAIN, LOGIN or CRAM-MD5), with or without the
       initial response on the AUTH line.
Before authenticating, it prints the AUTH command line it sends as "> AUTH ...".
After a successful login or auth it prints "AUTH CODE TEXT" and sends one message ("SENT"),
to show the session goes on; a refused one prints "AUTHFAIL CODE TEXT" and exits 3.
Any other error is a traceback and exit 1.
"""

import smtplib
import ssl
import sys

MESSAGE = (
    "From: a@example.com\r\nTo: b@example.net\r\nSubject: smtplib\r\n\r\n"
    "Sent by Python's smtplib.\r\n"
)


def send(smtp):
    refused = smtp.sendmail("a@example.com", ["b@example.net"], MESSAGE)
    assert refused == {}, refused
    print("SENT")


def show_auth_line(smtp):
    """Print the AUTH command line as it goes out, to show whether it held an initial response."""
    docmd = smtp.docmd

    def shown(cmd, args=""):
        if cmd.upper() == "AUTH":
            print(">", cmd, args)
        return docmd(cmd, args)

    smtp.docmd = shown


def authenticate(smtp, args):
    smtp.ehlo()
    show_auth_line(smtp)
    if args[0] == "login":
        _, user, password = args
        return smtp.login(user, password)
    _, mechanism, user, password, initial = args
    smtp.user, smtp.password = user, password
    method = {
        "PLAIN": smtp.auth_plain,
        "LOGIN": smtp.auth_login,
        "CRAM-MD5": smtp.auth_cram_md5,
    }[mechanism]
    return smtp.auth(mechanism, method, initial_response_ok=(initial == "initial"))


def connect(port, tls, cafile):
    """An SMTP session on 127.0.0.1:port: plaintext (tls is None), SMTPS or after STARTTLS."""
    if tls is None:
        return smtplib.SMTP("127.0.0.1", port, timeout=10)
    context = ssl.create_default_context(cafile=cafile)
    if tls == "smtps":
        smtp = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=context)
    else:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
        # starttls() sends EHLO first and forgets its reply after the handshake, so the
        # next command EHLOs again inside TLS, as RFC 3207 wants.
        smtp.starttls(context=context)
    print("TLS", smtp.sock.version())
    return smtp


def main(argv):
    port, args = int(argv[1]), argv[2:]
    tls = cafile = None
    if args[0] in ("smtps", "starttls"):
        tls, cafile, args = args[0], args[1], args[2:]
    with connect(port, tls, cafile) as smtp:
        if args[0] != "send":
            try:
                code, text = authenticate(smtp, args)
            except smtplib.SMTPAuthenticationError as e:
                print("AUTHFAIL", e.smtp_code, e.smtp_error.decode())
                return 3
            print("AUTH", code, text.decode())
        send(smtp)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
