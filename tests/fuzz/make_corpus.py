#!/usr/bin/python3
"""Write the seed corpora (tests/fuzz/corpus/<target>/): hand-picked inputs
that reach every branch the fuzzers start from. Run again after editing;
file names are content hashes, so nothing is duplicated."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import jwt

HERE = Path(__file__).resolve().parent


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jsonline() -> list:
    lines = [
        '{}', '[]', '""', 'true', 'false', 'null', '0', '-0', '12', '-1.5e+10', '1E-2',
        '{"a":1}', '  {"a" : [ true , false , null ] }  ', '\t[1]\r', '[1,2,{"b":[]}]',
        '"\\u00e9\\n\\t\\"\\\\\\/\\b\\f\\r"', '"\\uD83D\\uDE00"', '"\\ud800"', '"\\u0000"',
        '"é€😀"', '{"":""}', '1e999', '12345678901234567890',
        'nope', '{"a" 1', '[1,]', '{"a":1,}', '01', '1.', '-', '.5', '"\x01"', "'x'",
        '{"a":1}{"b":2}', '[1 2]', 'tru', 'nul', '"\\x"', '"\\u12g4"', '   ',
        '[' * 512 + ']' * 512, '[' * 513, '{"a":' * 300 + '1' + '}' * 300,
    ]
    out = [s.encode() for s in lines]
    out += [b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"',
            b'"\xe2\x82"', b'1\x00', b'{"a\x00":1}', b'{"a":1}\n{"b":', b'\xef\xbb\xbf{}']
    return out


def sse() -> list:
    rec = {"seq_num": 0, "timestamp": 1712150400000,
           "body": json.dumps({"data": '{"approved":true}', "id": "inp_3f9c0a1b2c3d"})}
    batch = json.dumps({"records": [rec], "tail": {"seq_num": 1, "timestamp": 1712150400000}})
    return [s.encode() if isinstance(s, str) else s for s in [
        f"id: 0,1,106\nevent: batch\ndata: {batch}\n\n",
        'event: ping\ndata: {"timestamp":1712150405000}\n\n',
        "data: [DONE]\n\n",
        "event: batch\r\ndata: a\r\ndata: b\r\n\r\n",
        "data: x\rdata: y\r\r",
        ": a comment\n:\ndata: after comment\n\n",
        "retry: 1500\n\nretry: x\ndata: r\n\n",
        "id: 7\ndata: one\n\nid\ndata: two\n\n",
        "id: a\x00b\ndata: nul in id\n\n",
        "data\n\ndata:\n\ndata:  two spaces\n\n",
        "event: batch\nevent: other\ndata: last type wins\n\n",
        b"\xef\xbb\xbfdata: bom\n\n", b"\xef\xbbdata: half bom\n\n",
        "data: " + "x" * 600 + "\n\n",
        "data: " + "y" * 300 + "\ndata: " + "z" * 300 + "\n\n",
        "data: no end",
        "field without colon\ndata: z\n\n",
    ]]


def record() -> list:
    def body(data, id_="inp_000000000001", **extra) -> str:
        return json.dumps({"data": data, "id": id_, **extra})

    def batch(records, tail=None) -> bytes:
        obj = {"records": records}
        if tail is not None:
            obj["tail"] = {"seq_num": tail, "timestamp": 1}
        return json.dumps(obj).encode()

    r = lambda seq, b, **kw: {"seq_num": seq, "timestamp": 1712150400000 + seq, "body": b, **kw}
    return [
        batch([r(0, body('{"approved":true}'))], 1),
        batch([r(0, body('"123"')), r(1, body('123')), r(2, body('12345678901234567890'))], 3),
        batch([r(0, body({"already": [1, 2.50, "x"]})), r(1, body(None)), r(2, body(0.1))]),
        batch([r(0, body('{\n  "pretty": [1,\n 2]\n}')), r(1, body('not json at all'))]),
        batch([r(0, "", headers=[["", "trim"]]), r(1, body('1'))], 2),
        batch([r(3, body('3')), r(3, body('dup')), r(2, body('back')), r(5, body('5'))]),
        batch([r(0, '{"data":"1","data":"2","id":"inp_x"}'),
               r(1, '{"d\\u0061ta":[1, {"data": 9}],"id":"inp_y"}'),
               r(2, '{"id":"inp_z","data" : { "a" : "b\\"}" } }')]),
        batch([r(0, None), r(1, body('"\\u0000"')), r(2, '{"id":"no data"}'),
               r(3, '[1,2]'), r(4, 'not json')]),
        batch([r(0, body("line\r\nbreak")), r(1, body('"a\\nb"'))]),
        b'{"records":[{"seq_num":1.5,"body":"{}"}]}', b'{"records":{}}', b'[]', b'{"tail":1}',
        b'{"records":[{"seq_num":0,"body":{"data":1}}]}',
        b'{"records":[{"seq_num":9223372036854775807,"body":"{\\"data\\":\\"1\\"}"}]}',
        b'{"records":[{"seq_num":-5,"body":"{\\"data\\":\\"1\\"}"}]}',
    ]


def cred() -> list:
    key = "tr_dev_fuzzfuzzfuzzfuzz"
    payload = {"sub": "env_1", "pub": True, "iss": "https://id.trigger.dev",
               "aud": "https://api.trigger.dev", "iat": 1700000000, "exp": 1700000900}
    tokens = [jwt.encode({**payload, "scopes": s}, key, algorithm="HS256") for s in (
        ["read:runs:run_1", "write:inputStreams:run_1"], ["admin"], ["read:all", "write:all"],
        ["read:runs", "read:tags:a:b:c"], [])]
    tokens.append(jwt.encode({"exp": 1.5e300}, key, algorithm="HS256"))
    tokens.append(f"{b64(b'{}')}.{b64(b'{}')}.x")
    mode0 = [f"{t}\nread\nruns\nrun_1" for t in tokens] + [
        "tr_dev_abcdef0123456789", "tr_prod_x", "tr__x", "tr_dev_", "eyJ.a.b", "a.b.c.d",
        "eyJhbGciOiJIUzI1NiJ9.!!!.x", "tr_dev_key with space"]
    claims = [
        {"scopes": ["read:runs:run_1", "write:inputStreams:run_1"], "exp": 1, "sub": "e"},
        {"scopes": "read:all"}, {"scopes": [1]}, {"exp": "soon"}, {"exp": 1e19}, {"sub": 5},
        {"scopes": ["admin", "read:runs:run:with:colons", "write:", ":", "read::x"]}, [],
    ]
    mode1 = [json.dumps(c) + "\nwrite\ninputStreams\nrun_1" for c in claims]
    mode1 += ['{"scopes":["read:runs:x"]}\nread\nruns', '{"a":\nread\nruns\nx']
    mode2 = ["read:runs:run_1\nwrite:inputStreams:run_1", "admin", "", "read:all\nwrite:all",
             "é:ü:ß", "read:runs:a:b:c\nread:tasks:t"]
    return ([b"\x00" + s.encode() for s in mode0] + [b"\x01" + s.encode() for s in mode1]
            + [b"\x02" + s.encode() for s in mode2] + [b"\x02\xff\xfe"])


def main() -> None:
    for name, seeds in {"jsonline": jsonline(), "sse": sse(), "record": record(),
                        "cred": cred()}.items():
        d = HERE / "corpus" / name
        d.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (d / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


if __name__ == "__main__":
    main()
