import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasette_forensics import importers
from datasette_forensics.importers import ParseError, RECORD_KEYS, detect_format, get_format

T = 1595063564000  # 2020-07-18T09:12:44Z
HOUR = 3_600_000
MINUTE = 60_000


def parse(fmt: str, *lines: str):
    """Feed lines to one parser of the format (header state carries over); the last result."""
    parser = get_format(fmt).Parser()
    result = None
    for line in lines:
        result = parser.parse(line)
    return result


def rejected(fmt: str, *lines: str) -> str:
    with pytest.raises(ParseError) as info:
        parse(fmt, *lines)
    return str(info.value)


def record(**values):
    """A full record: every key, None unless given."""
    return {key: values.get(key) for key in RECORD_KEYS}


# combined ----------------------------------------------------------------------

LINE = (
    '203.0.113.9 - - [18/Jul/2020:09:12:44 +0000] "GET /api/orgs/acme/users?page=2 HTTP/1.1" '
    '200 5120 "https://app.example.com/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"'
)


def test_combined_normal_line():
    assert parse("combined", LINE) == record(
        ts=T,
        ip="203.0.113.9",
        ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0",
        uri="/api/orgs/acme/users?page=2",
        method="GET",
        protocol="HTTP/1.1",
        status=200,
        bytes=5120,
        referer="https://app.example.com/",
    )


@pytest.mark.parametrize(
    "client,ip",
    [
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("in24.inetnebr.com", "in24.inetnebr.com"),
    ],
)
def test_combined_client_forms(client, ip):
    rec = parse("combined", LINE.replace("203.0.113.9", client))
    assert rec["ip"] == ip
    assert rec["uri"] == "/api/orgs/acme/users?page=2"


def test_combined_escaped_quote_and_hex_escape_in_ua():
    line = LINE.replace(
        '"Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"', r'"Mozilla \"quoted\" and \x22hex\x22 \\ end"'
    )
    rec = parse("combined", line)
    # Both spellings of an escaped quote (Apache's \" and nginx's \x22) decode to a
    # quote, so user agents match the sessions' ones; \\ and other escapes stay as written.
    assert rec["ua"] == r'Mozilla "quoted" and "hex" \\ end'
    assert rec["referer"] == "https://app.example.com/"
    assert rec["status"] == 200


def test_combined_escaped_quote_at_end_of_field():
    # The referer ends in an escaped quote; the UA after it is intact.
    rec = parse("combined", LINE.replace('"https://app.example.com/"', r'"https://x/\""'))
    assert rec["referer"] == 'https://x/"'
    assert rec["ua"] == "Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"


def test_combined_hex_escaped_referer_kept_as_written():
    line = LINE.replace('"https://app.example.com/"', r'"http://\xe4\xe5\xe3/"')
    assert parse("combined", line)["referer"] == r"http://\xe4\xe5\xe3/"


def test_combined_dash_fields_are_none():
    line = '198.51.100.4 - - [18/Jul/2020:09:12:44 +0000] "HEAD / HTTP/1.0" 304 - "-" "-"'
    assert parse("combined", line) == record(
        ts=T, ip="198.51.100.4", uri="/", method="HEAD", protocol="HTTP/1.0", status=304
    )


@pytest.mark.parametrize(
    "request_text,method,uri,protocol",
    [
        ("-", None, "-", None),
        ("", None, "", None),
        (r"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", None, r"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", None),
        ("GET /ksc.html", "GET", "/ksc.html", None),  # HTTP/0.9
        ("GET /a file.html HTTP/1.0", "GET", "/a file.html", "HTTP/1.0"),
        ("get /x HTTP/1.1", "get", "/x", "HTTP/1.1"),
        ("PROPFIND /dav/ HTTP/1.1", "PROPFIND", "/dav/", "HTTP/1.1"),
        ("GET http://proxy.test/x HTTP/1.1", "GET", "http://proxy.test/x", "HTTP/1.1"),
        ("hello world", None, "hello world", None),
        (r"GET /x?q=\"1\" HTTP/1.1", "GET", '/x?q="1"', "HTTP/1.1"),
    ],
)
def test_combined_request_lines_that_are_not_method_uri_protocol(request_text, method, uri, protocol):
    line = f'192.0.2.7 - - [18/Jul/2020:09:12:44 +0000] "{request_text}" 400 157 "-" "-"'
    rec = parse("combined", line)
    assert (rec["method"], rec["uri"], rec["protocol"]) == (method, uri, protocol)
    assert rec["status"] == 400 and rec["bytes"] == 157 and rec["ip"] == "192.0.2.7"


@pytest.mark.parametrize(
    "cut,reason",
    [
        (LINE[:-10], "cut off inside a quoted field"),  # inside the UA (elastic line 8899)
        (LINE[:60], "cut off inside a quoted field"),  # inside the request
        (LINE[:30], "not a combined log line"),  # inside the time
        (LINE.replace('"https://app.example.com/" ', '"https://app.exa'), "cut off inside a quoted field"),
    ],
)
def test_combined_truncated_line_rejected(cut, reason):
    assert reason in rejected("combined", cut)


@pytest.mark.parametrize(
    "offset,ts",
    [
        ("+0330", T - 3 * HOUR - 30 * MINUTE),
        ("-0930", T + 9 * HOUR + 30 * MINUTE),
        ("+0545", T - 5 * HOUR - 45 * MINUTE),
        ("-0400", T + 4 * HOUR),
    ],
)
def test_combined_offsets(offset, ts):
    assert parse("combined", LINE.replace("+0000", offset))["ts"] == ts


def test_combined_consecutive_lines_share_and_change_time():
    parser = get_format("combined").Parser()
    first = parser.parse(LINE)
    again = parser.parse(LINE)
    later = parser.parse(LINE.replace("09:12:44", "09:12:45"))
    assert (first["ts"], again["ts"], later["ts"]) == (T, T, T + 1000)


def test_combined_bad_timestamp_rejected():
    assert rejected("combined", LINE.replace("18/Jul", "31/Jun")).startswith("bad timestamp: ")
    assert rejected("combined", LINE.replace("18/Jul/2020", "18/Jul/0999")).startswith("bad timestamp: ")


def test_combined_bad_status_rejected():
    assert rejected("combined", LINE.replace(" 200 ", " OK ")) == "bad status or bytes field"


def test_combined_not_a_log_line():
    assert rejected("combined", "Jul 18 09:12:44 host sshd[42]: Accepted publickey") == "not a combined log line"


def test_combined_blank_line_is_none():
    assert parse("combined", "") is None
    assert parse("combined", "   ") is None


def test_combined_keeps_ident_user_and_trailing_fields():
    line = LINE.replace(" - - ", " ident alice ") + ' "10.0.0.1" 0.004'
    rec = parse("combined", line)
    assert rec["extra"] == {"ident": "ident", "remote_user": "alice", "trailing": ["10.0.0.1", "0.004"]}
    assert rec["xff"] is None  # only nginx-ext maps X-Forwarded-For
    assert rec["ua"] == "Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"


def test_combined_unescaped_quotes_fall_back():
    line = LINE.replace('"Mozilla/5.0 (X11; Linux x86_64) Firefox/78.0"', '"Bot "v2" (+http://x)"')
    rec = parse("combined", line)
    assert rec["ua"] == 'Bot "v2" (+http://x)'
    assert rec["referer"] == "https://app.example.com/"
    assert rec["uri"] == "/api/orgs/acme/users?page=2"


def test_combined_accepts_a_common_line():
    rec = parse("combined", LINE.split(' "https')[0])
    assert rec["ua"] is None and rec["referer"] is None and rec["bytes"] == 5120


def test_combined_rejects_a_half_pair_after_bytes():
    # A line cut right after the referer: the user agent is missing.
    assert rejected("combined", LINE.split(' "Mozilla')[0]) == "unexpected text after the bytes field"


# common ------------------------------------------------------------------------


def test_common_nasa_line():
    line = (
        "in24.inetnebr.com - - [01/Aug/1995:00:00:01 -0400] "
        '"GET /shuttle/missions/sts-68/news/sts-68-mcc-05.txt HTTP/1.0" 200 1839'
    )
    assert parse("common", line) == record(
        ts=807249601000,
        ip="in24.inetnebr.com",
        uri="/shuttle/missions/sts-68/news/sts-68-mcc-05.txt",
        method="GET",
        protocol="HTTP/1.0",
        status=200,
        bytes=1839,
    )


def test_common_dash_bytes_ipv6_and_http09():
    rec = parse("common", '2001:db8::5 - - [01/Aug/1995:00:00:09 -0400] "GET /ksc.html" 304 -')
    assert (rec["ip"], rec["method"], rec["uri"], rec["protocol"], rec["status"], rec["bytes"]) == (
        "2001:db8::5", "GET", "/ksc.html", None, 304, None,
    )


def test_common_truncated_rejected():
    assert "cut off" in rejected("common", 'h.example - - [01/Aug/1995:00:00:09 -0400] "GET /images/NASA-log')
    assert rejected("common", "h.example - - [01/Aug/1995:00:00:09 -0400] ") == "bad request field"


def test_common_rejection_names_the_format():
    assert rejected("common", "garbage") == "not a common log line"


# nginx-ext ---------------------------------------------------------------------

EXT = (
    '54.36.149.41 - - [22/Jan/2019:03:56:14 +0330] "GET /filter/27%7C13 HTTP/1.1" 200 30577 "-" '
    '"Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)"'
)


def test_nginx_ext_xff_after_ua():
    rec = parse("nginx-ext", EXT + ' "103.28.132.65, 10.0.0.2"')
    assert rec["xff"] == "103.28.132.65, 10.0.0.2"
    assert rec["extra"] is None
    assert rec["ts"] == 1548116774000  # 2019-01-22T00:26:14Z
    assert rec["ua"] == "Mozilla/5.0 (compatible; AhrefsBot/6.1; +http://ahrefs.com/robot/)"
    assert rec["uri"] == "/filter/27%7C13"


def test_nginx_ext_dash_xff_and_other_trailing_fields():
    rec = parse("nginx-ext", EXT + ' "-" 0.012 0.010, 0.002 "shop.example.com"')
    assert rec["xff"] is None
    assert rec["extra"] == {"trailing": ["0.012", "0.010,", "0.002", "shop.example.com"]}


def test_nginx_ext_unquoted_first_trailing_field_is_not_xff():
    rec = parse("nginx-ext", EXT + " 0.012 0.010")
    assert rec["xff"] is None
    assert rec["extra"] == {"trailing": ["0.012", "0.010"]}


def test_nginx_ext_escaped_xff():
    rec = parse("nginx-ext", EXT + r' "1.2.3.4, \"evil\""')
    assert rec["xff"] == '1.2.3.4, "evil"'


def test_nginx_ext_truncated_in_trailing_field_rejected():
    assert "cut off" in rejected("nginx-ext", EXT + ' "103.28.13')


def test_nginx_ext_does_not_guess_unescaped_quotes():
    line = EXT.replace("(compatible;", '"compatible";') + ' "-"'
    assert rejected("nginx-ext", line)


# jsonl -------------------------------------------------------------------------

JSON = (
    '{"remote_addr":"10.0.0.1","time_iso8601":"2020-07-18T14:42:44+05:30","request_uri":"/api/x?y=1",'
    '"request_method":"GET","status":"200","body_bytes_sent":12,"http_user_agent":"curl/8.1",'
    '"http_referer":"-","token_id":123,"org_id":"0042","auth_type":"integration_token",'
    '"host":"api.example.com","http_x_forwarded_for":"198.51.100.1","request_time":"0.003"}'
)


def test_jsonl_normal_line():
    assert parse("jsonl", JSON) == record(
        ts=T,
        ip="10.0.0.1",
        ua="curl/8.1",
        uri="/api/x?y=1",
        method="GET",
        status=200,
        bytes=12,
        token_id="123",  # a JSON number, kept as a string
        org_id="0042",
        auth_type="integration_token",
        host="api.example.com",
        xff="198.51.100.1",
        extra={"request_time": "0.003"},
    )


@pytest.mark.parametrize(
    "time_field",
    [
        '"timestamp":"2020-07-18T09:12:44Z"',
        '"time_local":"18/Jul/2020:12:42:44 +0330"',
        '"msec":"1595063564.000"',
        '"msec":1595063564',
    ],
)
def test_jsonl_time_fields(time_field):
    line = '{"remote_addr":"2001:db8::9",' + time_field + ',"request_uri":"/"}'
    rec = parse("jsonl", line)
    assert rec["ts"] == T and rec["ip"] == "2001:db8::9" and rec["extra"] is None


def test_jsonl_request_is_a_fallback():
    rec = parse("jsonl", '{"remote_addr":"1.2.3.4","msec":1595063564.5,"request":"POST /login HTTP/2.0","status":401}')
    assert (rec["method"], rec["uri"], rec["protocol"], rec["status"], rec["ts"]) == (
        "POST", "/login", "HTTP/2.0", 401, T + 500,
    )


@pytest.mark.parametrize(
    "line,reason",
    [
        ("not json", "not JSON"),
        ('{"remote_addr": "1.2.3.4", "msec": 1', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"msec":1595063564,"request_uri":"/"}', "missing field remote_addr"),
        ('{"remote_addr":"-","msec":1595063564,"request_uri":"/"}', "missing field remote_addr"),
        ('{"remote_addr":"1.2.3.4","request_uri":"/"}', "missing time"),
        ('{"remote_addr":"1.2.3.4","msec":1595063564}', "missing field request_uri"),
        ('{"remote_addr":"1.2.3.4","time_iso8601":"yesterday","request_uri":"/"}', "bad timestamp: "),
        ('{"remote_addr":"1.2.3.4","msec":1595063564,"request_uri":"/","status":"OK"}', "bad status"),
    ],
)
def test_jsonl_rejections(line, reason):
    assert reason in rejected("jsonl", line)


# csv ---------------------------------------------------------------------------

HEADER = "remote_addr,timestamp,request_uri,request_method,status,body_bytes_sent,http_user_agent,token_id,org_id"


def test_csv_header_is_none_and_rows_parse():
    parser = get_format("csv").Parser()
    assert parser.parse(HEADER) is None
    rec = parser.parse('203.0.113.5,2020-07-18T09:12:44Z,/a?b=1,GET,200,-,"Mozilla, ""x""",007,')
    assert rec == record(
        ts=T, ip="203.0.113.5", ua='Mozilla, "x"', uri="/a?b=1", method="GET", status=200, token_id="007"
    )
    # A repeated header (concatenated exports) is a header too.
    assert parser.parse(HEADER) is None
    assert parser.parse("::1,1595063564,/,,,,,,")["ip"] == "::1"


def test_csv_header_names_are_case_and_space_insensitive():
    rec = parse("csv", "\ufeffRemote_Addr, Time_ISO8601 ,Request_URI", "1.2.3.4,2020-07-18 12:42:44+0330,/x")
    assert (rec["ip"], rec["ts"], rec["uri"]) == ("1.2.3.4", T, "/x")


@pytest.mark.parametrize(
    "row,reason",
    [
        ("1.2.3.4,2020-07-18T09:12:44Z,/a", "expected 9 columns, got 3"),
        ("1.2.3.4,2020-07-18T09:12:44Z,/a,GET,200,1,ua,1,2,extra", "expected 9 columns, got 10"),
        ('1.2.3.4,2020-07-18T09:12:44Z,"/a,GET,200,1,ua,1,2', "bad CSV"),
        (",2020-07-18T09:12:44Z,/a,GET,200,1,ua,1,2", "missing field remote_addr"),
        ("1.2.3.4,,/a,GET,200,1,ua,1,2", "missing time"),
        ("1.2.3.4,2020-07-18T09:12:44Z,,GET,200,1,ua,1,2", "missing field request_uri"),
        ("1.2.3.4,18/Jul/2020,/a,GET,200,1,ua,1,2", "bad timestamp"),
    ],
)
def test_csv_rejections(row, reason):
    assert reason in rejected("csv", HEADER, row)


# alb ---------------------------------------------------------------------------

ALB = (
    'https 2020-07-18T09:12:44.123456Z app/my-lb/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 '
    '0.000 0.001 0.000 200 200 34 366 "GET https://api.example.com:443/v1/orgs?x=1 HTTP/1.1" '
    '"curl/7.46.0" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 '
    'arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 '
    '"Root=1-58337262-36d228ad5d99923122bbe354" "api.example.com" "arn:aws:acm:cert" 0 '
    '2020-07-18T09:12:44.100000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_abc'
)


def test_alb_normal_line():
    rec = parse("alb", ALB)
    assert {k: v for k, v in rec.items() if k != "extra"} == {
        k: v
        for k, v in record(
            ts=T + 123,
            ip="192.168.131.39",
            ua="curl/7.46.0",
            uri="/v1/orgs?x=1",
            method="GET",
            protocol="HTTP/1.1",
            status=200,
            bytes=366,
            host="api.example.com",
        ).items()
        if k != "extra"
    }
    extra = rec["extra"]
    assert extra["client_port"] == "2817"
    assert extra["target"] == "10.0.0.1:80"
    assert extra["target_processing_time"] == "0.001"
    assert extra["trace_id"] == "Root=1-58337262-36d228ad5d99923122bbe354"
    assert extra["domain_name"] == "api.example.com"
    assert extra["conn_trace_id"] == "TID_abc"
    assert "redirect_url" not in extra  # '-' values are left out


@pytest.mark.parametrize(
    "client,ip",
    [("2001:db8::1:2817", "2001:db8::1"), ("[2001:db8::1]:2817", "2001:db8::1"), ("10.1.2.3:443", "10.1.2.3")],
)
def test_alb_clients(client, ip):
    rec = parse("alb", ALB.replace("192.168.131.39:2817", client))
    assert rec["ip"] == ip
    assert rec["extra"]["client_port"] in ("2817", "443")


def test_alb_non_default_port_kept_in_host():
    rec = parse("alb", ALB.replace("https://api.example.com:443/", "https://api.example.com:8443/"))
    assert rec["host"] == "api.example.com:8443" and rec["uri"] == "/v1/orgs?x=1"


def test_alb_malformed_request_kept_as_written():
    line = ALB.replace('"GET https://api.example.com:443/v1/orgs?x=1 HTTP/1.1"', '"- https://api.example.com:443- -"')
    rec = parse("alb", line.replace(" 200 200 ", " 400 - "))
    assert (rec["method"], rec["uri"], rec["host"], rec["status"]) == (
        None, "- https://api.example.com:443- -", None, 400,
    )


def test_alb_classic_elb_line_without_type():
    line = (
        '2020-07-18T09:12:44.000000Z my-elb 192.0.2.10:52888 10.0.0.5:80 0.000803 0.048702 0.002085 '
        '200 200 0 1169 "GET http://www.example.com:80/ HTTP/1.1" "Mozilla/5.0" - -'
    )
    rec = parse("alb", line)
    assert (rec["ts"], rec["ip"], rec["uri"], rec["host"], rec["bytes"]) == (
        T, "192.0.2.10", "/", "www.example.com", 1169,
    )


def test_alb_rejections():
    assert "cut off" in rejected("alb", ALB.split(" ECDHE")[0][:-5])
    assert rejected("alb", "http nonsense") == "not an ALB log line"
    assert rejected("alb", ALB.replace("192.168.131.39:2817", "-")) == "missing client address"
    bad_time = ALB.replace("2020-07-18T09:12:44.123456Z", "2020-07-18T29:12:44Z")
    assert rejected("alb", bad_time).startswith("bad timestamp")


# w3c ---------------------------------------------------------------------------

IIS_HEADERS = [
    "#Software: Microsoft Internet Information Services 10.0",
    "#Version: 1.0",
    "#Date: 2020-07-18 09:00:00",
    "#Fields: date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip "
    "cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken",
]
IIS = (
    "2020-07-18 09:12:44 10.0.0.5 GET /api/x id=1&y=2 443 - 2001:db8::7 "
    "Mozilla/5.0+(Windows+NT+10.0;+Win64;+x64) https://example.com/ 200 0 0 15"
)


def test_w3c_headers_are_none():
    parser = get_format("w3c").Parser()
    assert [parser.parse(line) for line in IIS_HEADERS] == [None] * 4
    assert parser.parse("#Remark: anything") is None


def test_w3c_iis_line():
    rec = parse("w3c", *IIS_HEADERS, IIS)
    assert rec == record(
        ts=T,
        ip="2001:db8::7",
        ua="Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        uri="/api/x?id=1&y=2",
        method="GET",
        status=200,
        referer="https://example.com/",
        extra={"s-ip": "10.0.0.5", "s-port": "443", "sc-substatus": "0", "sc-win32-status": "0", "time-taken": "15"},
    )


def test_w3c_query_dash_means_none():
    rec = parse("w3c", *IIS_HEADERS, IIS.replace("id=1&y=2", "-").replace("https://example.com/", "-"))
    assert rec["uri"] == "/api/x" and rec["referer"] is None


def test_w3c_fields_change_mid_file_and_date_header():
    rec = parse(
        "w3c", *IIS_HEADERS, IIS, "#Date: 2020-07-19 00:00:00", "#Fields: time c-ip cs-uri-stem", "00:00:01 1.2.3.4 /b"
    )
    assert (rec["ts"], rec["ip"], rec["uri"]) == (1595116801000, "1.2.3.4", "/b")


def test_w3c_cloudfront_tabs_and_percent_encoded_ua():
    header = (
        "#Fields: date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status "
        "cs(Referer) cs(User-Agent) cs-uri-query cs(Cookie) x-edge-result-type x-host-header "
        "cs-protocol-version x-forwarded-for"
    )
    values = [
        "2020-07-18", "09:12:44", "IAD89-C3", "335", "3.92.144.159", "HEAD", "d111.cloudfront.net",
        "/rss/a%20b.rss", "200", "-", "Slackbot%201.0%20(+https://api.slack.com/robots)", "v=1", "-",
        "Miss", "www.example.com", "HTTP/2.0", "198.51.100.7",
    ]  # fmt: skip
    rec = parse("w3c", "#Version: 1.0", header, "\t".join(values))
    assert rec == record(
        ts=T,
        ip="3.92.144.159",
        ua="Slackbot 1.0 (+https://api.slack.com/robots)",  # '+' kept: CloudFront encodes with %
        uri="/rss/a%20b.rss?v=1",  # the uri stays as written
        method="HEAD",
        protocol="HTTP/2.0",
        status=200,
        bytes=335,
        host="www.example.com",
        xff="198.51.100.7",
        extra={"x-edge-location": "IAD89-C3", "cs(host)": "d111.cloudfront.net", "x-edge-result-type": "Miss"},
    )


def test_w3c_rejections():
    assert rejected("w3c", IIS) == "data line before the #Fields header"
    assert rejected("w3c", *IIS_HEADERS, IIS.rsplit(" ", 1)[0]) == "expected 15 fields, got 14"
    assert "missing field c-ip" in rejected("w3c", *IIS_HEADERS, IIS.replace("2001:db8::7", "-"))
    assert rejected("w3c", *IIS_HEADERS, IIS.replace("09:12:44", "09:72:44")).startswith("bad timestamp")


# caddy -------------------------------------------------------------------------

CADDY = (
    '{"level":"info","ts":1595063564.1235,"logger":"http.log.access.log0","msg":"handled request",'
    '"request":{"remote_ip":"10.5.1.1","remote_port":"38574","client_ip":"2001:db8::77","proto":"HTTP/2.0",'
    '"method":"GET","host":"mirrors.example.net:400","uri":"/res/browse.css?v=2",'
    '"headers":{"Referer":["https://mirrors.example.net/"],"User-Agent":["Mozilla/5.0 \\"x\\""],'
    '"X-Forwarded-For":["2001:db8::77"]}},"bytes_read":0,"user_id":"","duration":0.0007,"size":1577,"status":200}'
)


def test_caddy_line():
    assert parse("caddy", CADDY) == record(
        ts=T + 124,
        ip="2001:db8::77",
        ua='Mozilla/5.0 "x"',
        uri="/res/browse.css?v=2",
        method="GET",
        protocol="HTTP/2.0",
        status=200,
        bytes=1577,
        referer="https://mirrors.example.net/",
        host="mirrors.example.net:400",
        xff="2001:db8::77",
        extra={
            "logger": "http.log.access.log0",
            "duration": 0.0007,
            "bytes_read": 0,
            "remote_ip": "10.5.1.1",
            "remote_port": "38574",
        },
    )


def test_caddy_remote_ip_when_no_client_ip_and_iso_ts():
    rec = parse("caddy", '{"ts":"2020-07-18T09:12:44Z","request":{"remote_ip":"192.0.2.1","uri":"/"},"status":404}')
    assert (rec["ts"], rec["ip"], rec["uri"], rec["ua"], rec["status"]) == (T, "192.0.2.1", "/", None, 404)


@pytest.mark.parametrize(
    "line,reason",
    [
        ("not json", "not JSON"),
        ('{"level":"info","ts":1595063564.1,"msg":"serving initial configuration"}', "not an access log entry"),
        ('{"request":{"remote_ip":"1.2.3.4","uri":"/"}}', "missing field ts"),
        ('{"ts":1595063564,"request":{"uri":"/"}}', "missing field request.remote_ip"),
        ('{"ts":1595063564,"request":{"remote_ip":"1.2.3.4"}}', "missing field request.uri"),
        ('{"ts":true,"request":{"remote_ip":"1.2.3.4","uri":"/"}}', "bad timestamp"),
    ],
)
def test_caddy_rejections(line, reason):
    assert reason in rejected("caddy", line)


# every format ------------------------------------------------------------------

SAMPLES = {
    "combined": [LINE, LINE.replace("203.0.113.9", "2001:db8::2")],
    "common": [
        'in24.inetnebr.com - - [01/Aug/1995:00:00:01 -0400] "GET / HTTP/1.0" 200 1839',
        'uplherc.upl.com - - [01/Aug/1995:00:00:07 -0400] "GET /ksc.html" 304 0',
    ],
    "nginx-ext": [EXT + ' "-"', EXT + ' "103.28.132.65"'],
    "jsonl": [JSON, JSON.replace("10.0.0.1", "10.0.0.2")],
    "csv": [HEADER, "1.2.3.4,2020-07-18T09:12:44Z,/a,GET,200,1,ua,1,2", "1.2.3.5,1595063564,/b,GET,404,0,ua,1,2"],
    "alb": [ALB, ALB.replace("192.168.131.39", "192.168.131.40")],
    "w3c": IIS_HEADERS + [IIS, IIS],
    "caddy": [CADDY, CADDY.replace("2001:db8::77", "2001:db8::78")],
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_parser_returns_every_record_key(name):
    parser = get_format(name).Parser()
    records = [r for r in (parser.parse(line) for line in SAMPLES[name]) if r is not None]
    assert records
    for rec in records:
        assert tuple(rec) == RECORD_KEYS
        assert isinstance(rec["ts"], int) and rec["ts"] > 0
        assert isinstance(rec["ip"], str) and rec["ip"]
        assert isinstance(rec["uri"], str) and rec["uri"]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_format_module_has_its_interface(name):
    module = get_format(name)
    assert module.NAME == name
    assert module.DESCRIPTION and "\n" not in module.DESCRIPTION
    assert module.Parser().parse("") is None


# detection ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_detect_each_format(name):
    lines = SAMPLES[name]
    assert detect_format(lines).NAME == name
    assert [n for n, module in importers.FORMATS.items() if module.detect(lines)] == [name]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_detect_despite_a_few_bad_lines(name):
    lines = list(SAMPLES[name]) * 5
    bad = [lines[0][:25] + "\x00garbage", "Traceback (most recent call last):", "-"]
    # The bad lines go after the first (CSV needs its header first).
    lines = lines[:1] + bad + lines[1:]
    assert detect_format(lines[:20]).NAME == name


def test_detect_real_world_mixture_of_combined_and_common():
    lines = [LINE] * 6 + [LINE.split(' "https')[0]] * 4
    assert detect_format(lines).NAME == "combined"


def test_detect_ignores_blank_lines():
    assert detect_format(["", "   ", LINE]).NAME == "combined"


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["", "  "],
        ["".join(chr(random.Random(i).randrange(32, 127)) for _ in range(120)) for i in range(20)],
        [
            bytes(random.Random(i).randrange(256) for _ in range(200)).decode("utf-8", "backslashreplace")
            for i in range(20)
        ],
        ["The quick brown fox jumps over the lazy dog."] * 20,
        ['{"name": "x", "value": 1}'] * 20,  # JSON, but not a log
        ["a,b,c", "1,2,3", "4,5,6"],  # CSV, but not a log
        ["Jul 18 09:12:44 host sshd[42]: Accepted publickey for root"] * 20,  # syslog
        ["#Version: 1.0", "no fields header"],
        [LINE] * 3 + ["garbage"] * 4,  # mostly not parseable
    ],
    ids=["empty", "blank", "random-text", "binary", "prose", "json", "csv", "syslog", "w3c-no-fields", "mostly-bad"],
)
def test_detect_none(lines):
    assert detect_format(lines) is None


def test_formats_registry_order():
    names = list(importers.FORMATS)
    assert sorted(names) == sorted(SAMPLES)
    assert names.index("caddy") < names.index("jsonl")
    assert names.index("nginx-ext") < names.index("combined") < names.index("common")


def test_get_format_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_format("apache")
    message = str(info.value)
    assert message.startswith("unknown format 'apache'; choose one of: ")
    for name in SAMPLES:
        assert name in message


def test_parse_error_is_a_value_error():
    assert issubclass(ParseError, ValueError)


# properties --------------------------------------------------------------------

SAMPLE_LINES = [line for lines in SAMPLES.values() for line in lines]


@settings(max_examples=300)
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.one_of(
        st.text(max_size=300),
        st.builds(
            lambda line, cut, junk: line[:cut] + junk + line[cut:],
            st.sampled_from(SAMPLE_LINES),
            st.integers(0, 400),
            st.text(alphabet=' "\\[]-:/{},\t#x', max_size=5),
        ),
    ),
)
def test_parsers_only_ever_raise_parse_error(name, line):
    parser = get_format(name).Parser()
    for header in SAMPLES[name][:4]:
        if header.startswith("#") or header == HEADER:
            parser.parse(header)
    try:
        rec = parser.parse(line)
    except ParseError as exc:
        assert str(exc)
        return
    if rec is not None:
        assert tuple(rec) == RECORD_KEYS
        assert isinstance(rec["ts"], int) and isinstance(rec["ip"], str) and isinstance(rec["uri"], str)


_field = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@given(
    ua=_field,
    referer=_field,
    path=st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs"), blacklist_characters='"\\'),
        min_size=1,
        max_size=30,
    ),
    status=st.integers(100, 599),
    size=st.one_of(st.none(), st.integers(0, 10**12)),
)
def test_combined_round_trip(ua, referer, path, status, size):
    def quote(text):  # as Apache writes it: \ and " escaped
        return text.replace("\\", "\\\\").replace('"', '\\"')

    line = (
        f'192.0.2.1 - - [18/Jul/2020:09:12:44 +0000] "GET /{path} HTTP/1.1" {status} '
        f'{"-" if size is None else size} "{quote(referer)}" "{quote(ua)}"'
    )
    rec = parse("combined", line)
    # Only \" is unescaped: a \\ stays as written.
    assert rec["ua"] == (None if ua == "-" else quote(ua).replace('\\"', '"'))
    assert rec["referer"] == (None if referer == "-" else quote(referer).replace('\\"', '"'))
    assert (rec["uri"], rec["status"], rec["bytes"], rec["ts"]) == (f"/{path}", status, size, T)


@pytest.mark.parametrize(
    "fmt,line,reason",
    [
        ("combined", LINE.replace(" 5120 ", " " + "9" * 5000 + " "), "bad status or bytes field"),
        ("combined", LINE.replace(" 200 ", " 2000 "), "bad status or bytes field"),
        ("alb", ALB.replace(" 34 366 ", " 34 " + "3" * 30 + " "), "not an ALB log line"),
        ("jsonl", JSON.replace('"status":"200"', '"status":"' + "2" * 5000 + '"'), "bad status"),
        ("jsonl", JSON.replace('"body_bytes_sent":12', '"body_bytes_sent":' + "1" * 40), "bad body_bytes_sent"),
        ("jsonl", JSON.replace('"body_bytes_sent":12', '"body_bytes_sent":-1'), "bad body_bytes_sent"),
        ("caddy", CADDY.replace('"size":1577', '"size":true'), "bad size"),
        ("jsonl", JSON.replace('"time_iso8601":"2020-07-18T14:42:44+05:30"', '"msec":' + "9" * 3000), "bad timestamp"),
    ],
    ids=["huge-bytes", "4-digit-status", "alb-huge-bytes", "json-huge-status", "json-huge-bytes", "json-negative",
         "caddy-bool", "json-huge-msec"],
)
def test_absurd_numbers_are_rejected_not_crashes(fmt, line, reason):
    assert reason in rejected(fmt, line)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_byte_order_mark_before_the_first_line(name):
    lines = list(SAMPLES[name])
    lines[0] = "\ufeff" + lines[0]
    assert detect_format(lines).NAME == name
    parser = get_format(name).Parser()
    records = [r for r in (parser.parse(line) for line in lines) if r is not None]
    assert records and "\ufeff" not in repr(records)
