"""Write the demo access logs in sample_data/logs/ from the story tables below.

Standard library only, deterministic: running it twice gives byte-identical files.
The account records (orgs.csv, sessions.jsonl, ...) are written by hand next to this
script; README.md tells the story and lists the expected results.

    python sample_data/generate.py
"""

import datetime as dt
import gzip
import itertools
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
LOGS = HERE / "logs"

# --- who is who ------------------------------------------------------------------
CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/84.0.4147.89 Safari/537.36")
FIREFOX_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:78.0) "
               "Gecko/20100101 Firefox/78.0")
SAFARI_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/13.1.1 Safari/605.1.15")
CHROME_ANDROID = ("Mozilla/5.0 (Linux; Android 10; Pixel 3) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/84.0.4147.89 Mobile Safari/537.36")
FIREFOX_LINUX = ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:78.0) "
                 "Gecko/20100101 Firefox/78.0")
JAVA = "Apache-HttpClient/4.5.13 (Java/11.0.9)"

ALICE = ("198.51.100.20", CHROME_WIN)          # acme admin (member now)
SAM = ("198.51.100.7", FIREFOX_MAC)            # Sentry staff
BOB = ("198.51.100.30", SAFARI_MAC)            # left soylent on 2020-07-15
CAROL = ("2001:db8:4d::20", CHROME_ANDROID)    # joined massive after the patch
DAVE = ("198.51.100.40", FIREFOX_LINUX)        # oscorp owner
VISITOR = ("198.51.100.200", CHROME_WIN)       # anonymous web visitor
HEALTH = ("10.0.1.5", "ELB-HealthChecker/2.0")
CLUBHOUSE_V4 = ("203.0.113.10", JAVA)          # partner, IPv4 range
CLUBHOUSE_V6 = ("2001:db8:c1ab::15", JAVA)     # partner, IPv6 range
PAGERBRIDGE = ("203.0.113.140", "PagerBridge/2.3 (+https://pagerbridge.example/bot)")
OKHTTP = ("203.0.113.141", "okhttp/4.9.0")     # PagerBridge range, wrong UA
XSS_UA = ("192.0.2.99", "<script>alert(1)</script>")
HOOLI_BOT = ("192.0.2.21", "python-requests/2.24.0")
GLOBEX_CORP_BOT = ("192.0.2.22", "Go-http-client/1.1")
GLOBEX_BOT = ("192.0.2.23", "python-requests/2.22.0")
WAYNE_BOT = ("192.0.2.24", "Go-http-client/1.1")
INITECH_BOT = ("192.0.2.30", "python-requests/2.18.4")
TYRELL_BOT = ("192.0.2.40", "tyrell-sync/1.4")
ATTACKER = ("192.0.2.66", "curl/7.68.0")

HOSTILE_PATH = '/api/0/organizations/acme/"><img src=x onerror=alert(1)>'

# --- the story, one request a row ------------------------------------------------
# (file, UTC time, (ip, user agent), method, uri, status, extra jsonl fields)
REQUESTS = []


def req(log, when, who, uri, status=200, method="GET", **extra):
    REQUESTS.append((log, dt.datetime.fromisoformat(when), who, method, uri, status, extra))


def daily(log, first, last, hhmm, who, uri, status=200, method="GET", **extra):
    """One request a day at hh:mm UTC, from day `first` to day `last` inclusive."""
    day = dt.date.fromisoformat(first)
    while day <= dt.date.fromisoformat(last):
        req(log, f"{day}T{hhmm}:00", who, uri, status, method, **extra)
        day += dt.timedelta(days=1)


# combined: nginx on a Berlin host (time_local in +0200)
C = "combined"
req(C, "2020-06-30T23:30:00", ATTACKER, "/api/0/organizations/acme/", 403)  # local 01/Jul 01:30
req(C, "2020-07-01T00:00:00", ALICE, "/api/0/organizations/acme/issues/")  # = introduced_at
req(C, "2020-07-01T00:00:01", ALICE, "/static/app.js")
req(C, "2020-07-02T06:00:00", HEALTH, "/_health/")
req(C, "2020-07-03T09:00:00", DAVE, "/api/0/organizations/oscorp/")
req(C, "2020-07-03T09:00:05", DAVE, "/api/0/organizations/")  # api, but no org in it
req(C, "2020-07-05T12:00:00", PAGERBRIDGE, "/api/0/organizations/vandelay/issues/")
req(C, "2020-07-06T08:15:02", ALICE, "/api/0/organizations/acme/issues/?query=is:unresolved")
req(C, "2020-07-06T08:15:02", ALICE, "/api/0/organizations/acme/issues/?query=is:unresolved")
req(C, "2020-06-25T09:00:00", BOB, "/api/0/organizations/soylent/issues/")  # before the window
req(C, "2020-07-06T10:00:00", BOB, "/api/0/organizations/soylent/issues/")
req(C, "2020-07-08T11:00:00", SAM, "/api/0/organizations/acme/")
req(C, "2020-07-08T11:00:05", SAM, "/api/0/organizations/acme/members/")
req(C, "2020-07-09T10:30:00", BOB, "/api/0/projects/soylent/web/")
req(C, "2020-07-10T12:00:00", VISITOR, "/")
req(C, "2020-07-10T12:00:01", VISITOR, "/static/app.js")
req(C, "2020-07-10T14:00:00", DAVE, "/api/0/projects/oscorp/mobile/issues/")
req(C, "2020-07-12T06:00:00", HEALTH, "/_health/")
req(C, "2020-07-12T12:00:00", PAGERBRIDGE, "/api/0/organizations/vandelay/issues/")
req(C, "2020-07-13T16:40:10", ALICE, "/api/0/projects/acme/backend/events/")
req(C, "2020-07-14T20:10:00", ATTACKER, "/api/0/organizations/umbrella/issues/", 403)
req(C, "2020-07-14T20:11:00", ATTACKER, "/api/0/organizations/doesnotexist/", 404)
req(C, "2020-07-14T20:12:00", ATTACKER, "/api/0/organizations/initech/issues/", 401)
req(C, "2020-07-14T23:59:00", BOB, "/api/0/organizations/soylent/")
req(C, "2020-07-15T13:20:00", SAM, "/api/0/organizations/hooli/integrations/")
req(C, "2020-07-15T21:00:00", ATTACKER, "/api/0/organizations/acme/issues/")
req(C, "2020-07-15T21:00:30", ATTACKER, "/api/0/projects/acme/backend/events/?cursor=0:100:0")
req(C, "2020-07-18T04:00:00", OKHTTP, "/api/0/organizations/vandelay/issues/")
req(C, "2020-07-18T04:05:00", OKHTTP, "/api/0/organizations/vandelay/events/")
req(C, "2020-07-19T01:00:00", XSS_UA, "/wp-login.php", 404)
req(C, "2020-07-19T01:00:10", XSS_UA, "/api/0/organizations/vandelay/", 403)
req(C, "2020-07-20T06:00:00", HEALTH, "/_health/")
req(C, "2020-07-20T14:03:59", ATTACKER, "/api/0/organizations/acme/issues/")  # last second
req(C, "2020-07-20T14:04:00", ATTACKER, "/api/0/organizations/acme/issues/", 403)  # = patched_at
req(C, "2020-07-21T09:00:00", ALICE, "/api/0/organizations/acme/")

# jsonl: nginx JSON log; the app adds auth_type/token_id/org_id where it knows them
J = "jsonl"
daily(J, "2020-06-29", "2020-07-22", "10:00", HOOLI_BOT, "/api/0/organizations/hooli/events/")
req(J, "2020-07-16T10:30:00", HOOLI_BOT, "/api/0/issues/4242/", org_id="106")
req(J, "2020-07-20T14:03:59", HOOLI_BOT, "/api/0/organizations/hooli/events/")
req(J, "2020-07-20T14:04:00", HOOLI_BOT, "/api/0/organizations/hooli/events/")  # = patched_at
TYRELL = dict(auth_type="integration", token_id="712")
req(J, "2020-06-29T03:00:00", TYRELL_BOT, "/api/0/organizations/tyrell/issues/", **TYRELL)
for d in range(1, 20, 2):
    req(J, f"2020-07-{d:02d}T03:00:00", TYRELL_BOT, "/api/0/organizations/tyrell/issues/", **TYRELL)
MALLORY = dict(auth_type="integration", token_id="713")
req(J, "2020-07-14T20:00:00", ATTACKER, "/api/0/organizations/mallory-labs/", **MALLORY)
req(J, "2020-07-14T20:05:00", ATTACKER, "/api/0/organizations/mallory-labs/projects/", **MALLORY)
req(J, "2020-07-16T02:00:00", ATTACKER, HOSTILE_PATH, 404, **MALLORY)
req(J, "2020-07-16T02:01:00", ATTACKER, "/api/0/organizations/acme/members/", **MALLORY)
req(J, "2020-07-17T15:00:00", CAROL, "/api/0/organizations/massive/issues/")
req(J, "2020-07-17T15:02:30", CAROL, "/api/0/organizations/massive/releases/")
req(J, "2020-07-05T06:00:00", CLUBHOUSE_V6, "/api/0/organizations/hooli/issues/")
req(J, "2020-07-05T06:00:01", CLUBHOUSE_V6, "/api/0/organizations/stark/issues/")

# alb: the load balancer in front of the API (UTC)
A = "alb"
for day in ("04", "11", "13", "18"):
    req(A, f"2020-07-{day}T06:00:01", CLUBHOUSE_V4, "/api/0/organizations/stark/issues/")
req(A, "2020-07-04T06:00:00", CLUBHOUSE_V4, "/api/0/organizations/hooli/issues/")
req(A, "2020-07-04T06:00:02", CLUBHOUSE_V4, "/api/0/organizations/wayne/issues/")
req(A, "2020-07-18T06:00:00", CLUBHOUSE_V4, "/api/0/organizations/hooli/issues/")
req(A, "2020-07-21T06:00:00", CLUBHOUSE_V4, "/api/0/organizations/hooli/issues/")
req(A, "2020-07-21T06:00:01", CLUBHOUSE_V4, "/api/0/organizations/stark/issues/", 401)
daily(A, "2020-07-01", "2020-07-22", "12:00", WAYNE_BOT, "/api/0/organizations/wayne/releases/",
      201, "POST")
req(A, "2020-07-17T22:00:00", ATTACKER, "/api/0/organizations/wayne/issues/?statsPeriod=14d")
req(A, "2020-07-17T22:00:05", ATTACKER, "/api/0/projects/wayne/api/events/")
req(A, "2020-07-20T15:30:00", ATTACKER, "/api/0/organizations/wayne/issues/")
req(A, "2020-07-21T03:00:00", ATTACKER, "/api/0/organizations/wayne/members/")

# w3c: an IIS box that fronted the API for a few integration customers (UTC)
W = "w3c"
daily(W, "2020-07-01", "2020-07-10", "08:00", GLOBEX_CORP_BOT, "/api/0/organizations/globex/issues/")
daily(W, "2020-07-11", "2020-07-21", "08:00", GLOBEX_CORP_BOT,
      "/api/0/organizations/globex-corp/issues/")
req(W, "2020-07-12T08:00:30", GLOBEX_CORP_BOT, "/api/0/organizations/globex/issues/", 404)
daily(W, "2020-07-16", "2020-07-20", "09:00", GLOBEX_BOT, "/api/0/organizations/globex/issues/")
daily(W, "2020-07-01", "2020-07-08", "07:00", INITECH_BOT, "/api/0/organizations/initech/issues/")
req(W, "2020-07-08T11:59:59", INITECH_BOT, "/api/0/organizations/initech/issues/")
req(W, "2020-07-08T12:00:00", INITECH_BOT, "/api/0/organizations/initech/issues/", 401)
daily(W, "2020-07-09", "2020-07-21", "07:00", INITECH_BOT, "/api/0/organizations/initech/issues/",
      401)

# Lines that are not requests: (file, placed just after this UTC time, raw text).
# Three are deliberately broken (rejected on import); the empty one is a blank line
# (not counted at all).
ODD_LINES = [
    (C, "2020-07-11T00:00:00", ""),
    (C, "2020-07-13T16:40:10",
     '198.51.100.20 - - [13/Jul/2020:18:40:12 +0200] "GET /api/0/organizations/acme/iss'),
    (J, "2020-07-19T03:00:00",
     '{"time_iso8601":"2020-07-19T05:00:00+00:00","remote_addr":"192.0.2.21",'
     '"request_method":"GET","request_uri":"/api/0/organizations/hooli/ev'),
    (A, "2020-07-11T06:00:01",
     'https 2020-07-11T06:00:02.104233Z app/sentry-api/50dc6c495c0c9188 203.0.113.10:51234 '
     '10.0.2.17:8000 0.000 0.052 0.000 200 200 312 5120 "GET https://sentry.example.com:443'
     '/api/0/organizations/sta'),
]

# The jsonl log was exported twice: up to 2020-07-20 16:00, and later from 2020-07-19
# 00:00 on (the .gz, named the logrotate dateext way). The overlap is skipped as
# duplicates on import.
FIRST_EXPORT_END = dt.datetime(2020, 7, 20, 16, 0)
SECOND_EXPORT_START = dt.datetime(2020, 7, 19, 0, 0)


# --- formatting ------------------------------------------------------------------
def size(uri, status):
    return 45 if status >= 400 else 200 + len(uri) * 37 % 5000


def combined(ts, who, method, uri, status, extra):
    local = (ts + dt.timedelta(hours=2)).strftime("%d/%b/%Y:%H:%M:%S +0200")
    referer = "-"
    if who[1].startswith("Mozilla/") and uri.startswith("/api/"):
        referer = "https://sentry.example.com/"
    return (f'{who[0]} - - [{local}] "{method} {uri} HTTP/1.1" {status} {size(uri, status)} '
            f'"{referer}" "{who[1]}"')


def jsonl(ts, who, method, uri, status, extra):
    line = {
        "time_iso8601": ts.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "remote_addr": who[0],
        "request_method": method,
        "request_uri": uri,
        "status": status,
        "body_bytes_sent": size(uri, status),
        "http_user_agent": who[1],
        "host": "sentry.example.com",
    }
    line.update(extra)
    return json.dumps(line, separators=(",", ":"))


ALB_SEQ = itertools.count(1)


def alb(ts, who, method, uri, status, extra):
    n = next(ALB_SEQ)
    t = ts.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (104233 + n * 1111)
    created = ts.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (52000 + n * 1111)
    return (f"https {t} app/sentry-api/50dc6c495c0c9188 {who[0]}:{51000 + n} "
            f"10.0.2.17:8000 0.000 0.052 0.000 {status} {status} 312 {size(uri, status)} "
            f'"{method} https://sentry.example.com:443{uri} HTTP/1.1" "{who[1]}" '
            "ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 "
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/sentry-api/"
            f'73e2d6bc24d8a067 "Root=1-5f0f{n:04x}-0123456789abcdef01234567" '
            f'"sentry.example.com" "arn:aws:acm:us-east-1:123456789012:certificate/'
            f'12345678-1234-1234-1234-123456789012" 0 {created} "forward" "-" "-" '
            f'"10.0.2.17:8000" "{status}" "-" "-"')


W3C_HEADER = [
    "#Software: Microsoft Internet Information Services 10.0",
    "#Version: 1.0",
    "#Date: 2020-07-01 00:00:00",
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
    "cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status sc-bytes time-taken",
]


def w3c(ts, who, method, uri, status, extra):
    stem, _, query = uri.partition("?")
    return (f"{ts:%Y-%m-%d %H:%M:%S} 10.0.3.4 {method} {stem} {query or '-'} 443 - {who[0]} "
            f"{who[1]} - {status} 0 0 {size(uri, status)} 31")


FORMATTERS = {C: combined, J: jsonl, A: alb, W: w3c}


def lines_of(log):
    """Formatted lines of one log, in time order, broken lines in place."""
    rows = [(ts, 0, FORMATTERS[log](ts, who, m, u, s, x))
            for (lg, ts, who, m, u, s, x) in REQUESTS if lg == log]
    rows += [(dt.datetime.fromisoformat(after), 1, raw)
             for (lg, after, raw) in ODD_LINES if lg == log]
    return [(ts, text) for ts, _, text in sorted(rows, key=lambda r: (r[0], r[1]))]


def write(path, lines, header=()):
    path.write_text("".join(f"{line}\n" for line in [*header, *lines]), encoding="utf-8")


def main():
    LOGS.mkdir(exist_ok=True)
    write(LOGS / "access-combined.log", [text for _, text in lines_of(C)])
    write(LOGS / "access-alb.log", [text for _, text in lines_of(A)])
    write(LOGS / "access-w3c.log", [text for _, text in lines_of(W)], W3C_HEADER)
    rows = lines_of(J)
    write(LOGS / "access-ext.jsonl", [t for ts, t in rows if ts < FIRST_EXPORT_END])
    second = "".join(f"{t}\n" for ts, t in rows if ts >= SECOND_EXPORT_START)
    with open(LOGS / "access-ext.jsonl-20200722.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(second.encode("utf-8"))


if __name__ == "__main__":
    main()
