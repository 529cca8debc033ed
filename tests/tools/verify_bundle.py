#!/usr/bin/env python3
"""Independent verifier for bote proof bundles (format versions 1 and 2).

Written from docs/proof-bundle.md alone (plus the public standards it cites:
RFC 4880, RFC 8785, RFC 9162, C2SP signed-note / tlog-checkpoint /
tlog-cosignature, RFC 3161, RFC 5652, RFC 5280), without reading bote's source.
Standard library plus `cryptography` only; the tar reader, the OpenPGP packet
parser and the DER reader are written here.

    verify_bundle.py BUNDLE.tar [--key FINGERPRINT] [--trust TRUSTFILE]
        [--log-key VKEY] [--witness VKEY]... [--quorum N] [--tsa SHA256HEX]...
        [--checkpoint FILE [--consistency FILE]] [--allow-unanchored]

Exit status: 0 verified and anchored; 1 rejected (one line on stderr,
`rejected: <section>: <reason>`) or nothing anchors the key; 2 bad invocation;
3 internally valid but unanchored, with --allow-unanchored.
The hidden option `--corpus DIR` runs every case of DIR/expect.json.

Checks follow the order of spec section 13; section numbers in messages are
those of docs/proof-bundle.md.

Places where the specification was unclear (each decided the strict way unless
said otherwise):
 1. §13.2/§16: --key and --trust together. Both are honoured: each must anchor.
    --witness/--tsa add to the trust file's lists; the quorum is the largest
    one given (--quorum or the file's), default 1 if any witness, else 0.
    A --quorum larger than the number of trusted witnesses is a bad invocation.
 2. §15: the trust file's syntax is loose: words are split on runs of spaces,
    tabs and CR make the file invalid; DOMAIN must be a lower-case domain (§7
    syntax) and is compared exactly with the manifest's issuer; `tsa` hashes must
    be lower-case (§1), although --tsa on the command line accepts any case;
    `quorum` must be a plain decimal and may appear once; a second `gateway`
    line for the same domain and fingerprint makes the file invalid.
 3. §1 "Text is UTF-8 ... no carriage returns anywhere": applied to README.txt
    and FORMAT.md (valid UTF-8, no CR) and to keys/evidence.cert.asc.
 4. §6: the certificate's armour is not canonical, but text before BEGIN or
    after END, a missing blank line, or non-canonical base64 are rejected; its
    packets may use old or new headers (no partial/indeterminate lengths);
    packet tags other than 2, 6, 13, 14, 17 reject it; a second primary key
    rejects it.
 5. §6 usability: self-signatures over user attributes are not counted (the
    spec says "over a user ID"); self-signatures count only with SHA-256/384/512,
    a creation-time subpacket and no unknown critical subpacket; key flags and
    key expiration are read from the hashed area only; "no such self-signature
    states a key expiration ... before t" is applied to every verifying
    self-signature, including those made after t; an expiry ending exactly at t
    is still usable; if several newest self-signatures share the same time, all
    must carry the sign flag. Certification revocations (0x30) are ignored (the
    spec names only 0x20); a key revocation counts if it verifies with any hash.
 6. §6 detached signatures: the signature's algorithm (22/27) must equal the
    key's; issuer fingerprint/key ID/expiration subpackets may be critical;
    exactly one creation-time subpacket; a subpacket of length 0 is malformed.
 7. §7: reasons of negative events must be one of the listed codes other than
    RA01; `time_source` must be `gateway-clock`; `policy` must be exactly
    `urn:bote:evidence-policy:1`; `options` needs all three booleans;
    `attachments` is required (may be empty) and has exactly 20 entries when
    `all_attachments` is present (whose count must exceed 20); `details` is
    required (may be empty); domains are LDH labels (1-63, lower-case, no
    leading/trailing hyphen) without a dot requirement; string fields such as
    gateway_id are otherwise unconstrained; identity `method` may appear with
    `verified` false (not restricted).
 8. §5/§7: a version 1 manifest with version 2 records is rejected (the spec
    does not say; a version 1 writer could not have made them).
 9. §8 rule 6 / "options absent only in chains begun under version 1": a
    version 2 record without `options` is rejected when record 1 is version 2.
10. §10: "control characters" are Unicode category Cc (C0, DEL, C1); every
    signature line by the log key must verify, not just one; a line with the
    log's name and key id but a wrong length is "a line that does not verify".
    Version 1 log.vkey whitespace is ASCII whitespace (bytes.strip()).
11. §12: digest AlgorithmIdentifiers may have absent or NULL parameters;
    TSTInfo version must be 1; a `crls` field, certificate choices other than a
    plain X.509 certificate, a critical TSTInfo extension, or more than one
    matching certificate reject the token; an ESSCertID(v2) issuerSerial, if
    present, must name the certificate; the DER checks (sorted/distinct SET OF,
    minimal lengths, minimal INTEGERs, BOOLEAN 00/FF, no constructed strings)
    are applied recursively to the whole token including the certificates;
    for Ed25519 any of the three digests is accepted for the message digest;
    "digestAlgorithms holds exactly its digest algorithm" is compared as DER
    bytes (NULL vs absent parameters differ). A record exactly 5 minutes after
    genTime is accepted. An untrusted TSA (no anchors) still exits 0.
12. §14: a trusted checkpoint must have the same three-line form as the
    bundle's; the consistency file is plain JSON `{"consistency":[...]}`
    (whitespace allowed, no other keys), not necessarily canonical.
13. §1 times: leap seconds (":60") are rejected. §2: created before 1970 or
    beyond 11 octal digits cannot be encoded and is rejected.
14. §3 says README.txt, manifest.json, manifest.json.asc, "then every other
    member"; §5 says `members` lists every member except the manifest and its
    signature. Read together: `members` starts with README.txt.
15. §16 allows `--key CERT-FILE`; this tool takes only a fingerprint (the
    spec does not say whether "that certificate" means the same bytes or the
    same key). With neither anchor all checks still run; the result is exit 1
    unless --allow-unanchored.
"""
import argparse
import base64
import contextlib
import datetime
import hashlib
import io
import json
import os
import re
import sys
import unicodedata

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature, encode_dss_signature)
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

class Reject(Exception):
    """The bundle fails a rule; `section` is the spec section."""

    def __init__(self, section, reason):
        super().__init__(f"{section}: {reason}")
        self.section, self.reason = section, reason

class BadInvocation(Exception):
    pass

def need(cond, section, reason):
    if not cond:
        raise Reject(section, reason)

def H(data):
    return hashlib.sha256(data).digest()

# ---------------------------------------------------------------- section 1

HEX64 = re.compile(r"[0-9a-f]{64}")
FPR_RE = re.compile(r"[0-9A-F]{40}")
TIME_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z")
DEC_RE = re.compile(r"0|[1-9][0-9]*")

def b64_canonical(text, section, what):
    """§1 base64: standard alphabet, padded, canonical; returns bytes."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise Reject(section, f"{what}: not base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise Reject(section, f"{what}: not base64")
    need(base64.b64encode(raw).decode() == text, section, f"{what}: non-canonical base64")
    return raw

def parse_time(text, section, what):
    """§1 time -> milliseconds since 1970."""
    m = TIME_RE.fullmatch(text) if isinstance(text, str) else None
    need(m is not None, section, f"{what}: bad time {text!r}")
    y, mo, d, hh, mi, ss, ms = (int(g) for g in m.groups())
    try:
        dt = datetime.datetime(y, mo, d, hh, mi, ss, tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Reject(section, f"{what}: bad time {text!r}")
    return (int(dt.timestamp()) * 1000) + ms

def is_uint(v):
    return type(v) is int and 0 <= v < 2 ** 64

# ---------------------------------------------------------------- section 4

def jcs_string(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif c < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(c, "\\u%04x" % c))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)

def jcs(v):
    """RFC 8785 serialisation of the value shapes this format uses."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    if isinstance(v, str):
        return jcs_string(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(jcs_string(k) + ":" + jcs(v[k]) for k in keys) + "}"
    raise ValueError("value not allowed")

def _no_dupes(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key")
        d[k] = v
    return d

def _no_float(_):
    raise ValueError("number not an integer")

def parse_json(data, section, what):
    """Parse JSON strictly (no duplicates, no floats, no NaN)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_no_dupes,
                          parse_float=_no_float, parse_constant=_no_float)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Reject(section, f"{what}: not JSON")

def check_canonical(value, data, what):
    """§4: re-serialise and compare byte for byte."""
    try:
        again = jcs(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise Reject("4", f"{what}: not representable as canonical JSON")
    need(again == data, "4", f"{what}: not canonical JSON")


# Shape checking: a validator is a function (value, path) raising Reject.
def v_str(v, p):
    need(isinstance(v, str), "4", f"{p}: not a string")

def v_uint(v, p):
    need(is_uint(v), "4", f"{p}: not an integer 0..2^64-1")

def v_bool(v, p):
    need(type(v) is bool, "4", f"{p}: not a boolean")

def v_hex64(v, p):
    need(isinstance(v, str) and HEX64.fullmatch(v), "4", f"{p}: not a SHA-256 hex")

def v_fpr(v, p):
    need(isinstance(v, str) and FPR_RE.fullmatch(v), "4", f"{p}: not a fingerprint")

def v_time(v, p):
    parse_time(v, "1", p)

def v_enum(*values):
    def check(v, p):
        need(isinstance(v, str) and v in values, "7", f"{p}: {v!r} not allowed")
    return check

def v_regex(rx):
    def check(v, p):
        need(isinstance(v, str) and re.fullmatch(rx, v), "7", f"{p}: malformed")
    return check

def v_object(required, optional=None):
    optional = optional or {}

    def check(v, p):
        need(isinstance(v, dict), "4", f"{p}: not an object")
        for k in v:
            need(k in required or k in optional, "4", f"{p}: unknown field {k!r}")
        for k, f in required.items():
            need(k in v, "4", f"{p}: missing field {k!r}")
            f(v[k], f"{p}.{k}")
        for k, f in optional.items():
            if k in v:
                f(v[k], f"{p}.{k}")
    return check

def v_array(item, max_len=None):
    def check(v, p):
        need(isinstance(v, list), "4", f"{p}: not an array")
        need(max_len is None or len(v) <= max_len, "4", f"{p}: too long")
        for i, x in enumerate(v):
            item(x, f"{p}[{i}]")
    return check


# §7 addresses and domains
LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
DOMAIN_RE = re.compile(rf"{LABEL}(\.{LABEL})*")
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL_RE = re.compile(ATEXT + r"(\." + ATEXT + r")*")

def is_domain(s):
    return isinstance(s, str) and len(s) <= 253 and DOMAIN_RE.fullmatch(s) is not None

def v_domain(v, p):
    need(is_domain(v), "7", f"{p}: not a domain")

def v_address(v, p):
    ok = isinstance(v, str) and v.count("@") == 1 and len(v.encode()) <= 254
    if ok:
        local, dom = v.split("@")
        ok = len(local) <= 64 and LOCAL_RE.fullmatch(local) and is_domain(dom)
    need(ok, "7", f"{p}: not an address")

# ---------------------------------------------------------------- section 2

NAME_NUM = r"(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2,})"
NAME_RE = re.compile(
    rf"README\.txt|manifest\.json|manifest\.json\.asc|FORMAT\.md|checkpoint|checkpoint\.tst"
    rf"|keys/evidence\.cert\.asc|keys/log\.vkey|evidence/{NAME_NUM}\.(?:json|json\.asc|proof\.json)")

def record_name(n):
    return "%03d" % n

def read_archive(data):
    """§13.1: list of (name, content); each member regular, allowed, once."""
    members, seen, pos = [], set(), 0
    while True:
        need(pos + 512 <= len(data), "2", "archive truncated")
        hdr = data[pos:pos + 512]
        if hdr == bytes(512):
            break
        name = hdr[0:100].split(b"\0", 1)[0]
        prefix = hdr[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
        need(hdr[156:157] in (b"0", b"\0"), "2", f"{name!r} is not a regular file")
        size_field = hdr[124:136].rstrip(b"\0 ")
        need(re.fullmatch(rb"[0-7]+", size_field) is not None, "2", "unreadable tar size")
        size = int(size_field, 8)
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            raise Reject("3", "member name not ASCII")
        need(NAME_RE.fullmatch(name) is not None, "3", f"name not allowed: {name!r}")
        need(name not in seen, "2", f"name occurs twice: {name}")
        need(len(members) < MAX_MEMBERS, "2", f"more than {MAX_MEMBERS} members")
        seen.add(name)
        need(pos + 512 + size <= len(data), "2", "archive truncated")
        members.append((name, data[pos + 512:pos + 512 + size]))
        pos += 512 + (size + 511) // 512 * 512
    return members

# §2: the most members an archive may hold.
MAX_MEMBERS = 100_000

def tar_header(name, size, mtime):
    need(size < 8 ** 11 and 0 <= mtime < 8 ** 11, "2", "size or time not encodable")
    h = bytearray(512)
    h[0:len(name)] = name.encode("ascii")
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % mtime
    h[148:156] = b" " * 8
    h[156] = ord("0")
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b"%07o\0" % sum(h)
    return bytes(h)

def canonical_archive(members, mtime):
    """§2: the one encoding a bundle may have."""
    out = []
    for name, content in members:
        out.append(tar_header(name, len(content), mtime))
        out.append(content + bytes(-len(content) % 512))
    out.append(bytes(1024))
    return b"".join(out)

# ---------------------------------------------------------------- section 6

def crc24(data):
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF

def canonical_armour(packet):
    """§6 canonical armour of a signature packet."""
    b64 = base64.b64encode(packet).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    crc = base64.b64encode(crc24(packet).to_bytes(3, "big")).decode()
    return ("-----BEGIN PGP SIGNATURE-----\n\n" + "".join(l + "\n" for l in lines)
            + "=" + crc + "\n-----END PGP SIGNATURE-----\n").encode()

def signature_from_armour(data, what):
    """Extract the packet, then demand the armour be exactly canonical."""
    lines = data.split(b"\n")
    body = []
    for line in lines[2:]:
        if line.startswith(b"="):
            break
        body.append(line)
    try:
        packet = base64.b64decode(b"".join(body), validate=True)
    except ValueError:
        raise Reject("6", f"{what}: armour not base64")
    need(canonical_armour(packet) == data, "6", f"{what}: not in canonical armour")
    return packet

def dearmour_certificate(data):
    """Lenient-but-checked armour of `keys/evidence.cert.asc` (§6)."""
    need(b"\r" not in data, "1", "certificate: carriage return")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise Reject("6", "certificate: armour not ASCII")
    need(text.endswith("\n"), "6", "certificate: armour not LF-terminated")
    lines = text[:-1].split("\n")
    need(lines[0] == "-----BEGIN PGP PUBLIC KEY BLOCK-----", "6", "certificate: no BEGIN line")
    need(lines[-1] == "-----END PGP PUBLIC KEY BLOCK-----", "6", "certificate: no END line")
    i = 1
    while i < len(lines) - 1 and lines[i] != "":
        need(": " in lines[i], "6", "certificate: bad armour header")
        i += 1
    need(i < len(lines) - 1, "6", "certificate: no blank line after armour headers")
    body, crc = lines[i + 1:-1], None
    if body and body[-1].startswith("="):
        crc = body.pop()[1:]
    need(all(l and not l.startswith("=") for l in body), "6", "certificate: bad armour body")
    packets = b64_canonical("".join(body), "6", "certificate armour")
    if crc is not None:
        need(len(crc) == 4, "6", "certificate: bad CRC line")
        need(b64_canonical(crc, "6", "CRC") == crc24(packets).to_bytes(3, "big"), "6",
             "certificate: CRC-24 mismatch")
    return packets

def read_packets(data):
    """RFC 4880 §4.2 packets: list of (tag, body, header)."""
    out, pos = [], 0
    while pos < len(data):
        ctb = data[pos]
        need(ctb & 0x80, "6", "not an OpenPGP packet")
        if ctb & 0x40:  # new format
            tag, p = ctb & 0x3F, pos + 1
            need(p < len(data), "6", "truncated packet")
            o = data[p]
            if o < 192:
                length, p = o, p + 1
            elif o < 224:
                need(p + 2 <= len(data), "6", "truncated packet")
                length, p = ((o - 192) << 8) + data[p + 1] + 192, p + 2
            elif o == 255:
                need(p + 5 <= len(data), "6", "truncated packet")
                length, p = int.from_bytes(data[p + 1:p + 5], "big"), p + 5
            else:
                raise Reject("6", "partial body lengths not allowed")
        else:  # old format
            tag, ltype, p = (ctb >> 2) & 0x0F, ctb & 3, pos + 1
            need(ltype != 3, "6", "indeterminate packet length")
            n = (1, 2, 4)[ltype]
            need(p + n <= len(data), "6", "truncated packet")
            length, p = int.from_bytes(data[p:p + n], "big"), p + n
        need(p + length <= len(data), "6", "truncated packet")
        out.append((tag, data[p:p + length], data[pos:p]))
        pos = p + length
    return out

ED_OID = bytes.fromhex("2B06010401DA470F01")  # 1.3.6.1.4.1.11591.15.1
HASHES = {2: hashlib.sha1, 8: hashlib.sha256, 9: hashlib.sha384, 10: hashlib.sha512,
          11: hashlib.sha224}

class PrimaryKey:
    def __init__(self, body):
        need(len(body) >= 6 and body[0] == 4, "6", "primary key is not version 4")
        self.body, self.created, self.algo = body, int.from_bytes(body[1:5], "big"), body[5]
        if self.algo == 22:
            need(body[6:7] == b"\x09" and body[7:16] == ED_OID, "6", "EdDSA key not on Ed25519")
            need(body[16:18] == b"\x01\x07" and body[18:19] == b"\x40" and len(body) == 51,
                 "6", "EdDSA point not 0x40 || 32 bytes")
            raw = body[19:51]
        elif self.algo == 27:
            need(len(body) == 38, "6", "Ed25519 key of wrong length")
            raw = body[6:38]
        else:
            raise Reject("6", f"primary key algorithm {self.algo} not allowed")
        try:
            self.pub = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise Reject("6", "bad Ed25519 public key")
        self.prefix = b"\x99" + len(body).to_bytes(2, "big") + body
        self.fpr = hashlib.sha1(self.prefix).hexdigest().upper()

def read_mpi(body, pos):
    need(pos + 2 <= len(body), "6", "truncated MPI")
    bits = int.from_bytes(body[pos:pos + 2], "big")
    n = (bits + 7) // 8
    need(pos + 2 + n <= len(body), "6", "truncated MPI")
    value = body[pos + 2:pos + 2 + n]
    minimal = int.from_bytes(value, "big").bit_length() == bits
    return value, minimal, pos + 2 + n

def read_subpackets(area):
    """List of (type, critical, data, minimal_length)."""
    out, pos = [], 0
    while pos < len(area):
        o = area[pos]
        if o < 192:
            length, pos, minimal = o, pos + 1, True
        elif o < 255:
            need(pos + 2 <= len(area), "6", "truncated subpacket")
            length = ((o - 192) << 8) + area[pos + 1] + 192
            pos, minimal = pos + 2, True
        else:
            need(pos + 5 <= len(area), "6", "truncated subpacket")
            length = int.from_bytes(area[pos + 1:pos + 5], "big")
            pos, minimal = pos + 5, length >= 16320
        need(length >= 1 and pos + length <= len(area), "6", "bad subpacket length")
        t = area[pos]
        out.append((t & 0x7F, bool(t & 0x80), area[pos + 1:pos + length], minimal))
        pos += length
    return out

class Signature:
    """A version 4 signature packet (RFC 4880 §5.2.3)."""

    def __init__(self, body):
        need(len(body) >= 6 and body[0] == 4, "6", "signature is not version 4")
        self.type, self.algo, self.hash_algo = body[1], body[2], body[3]
        hlen = int.from_bytes(body[4:6], "big")
        need(6 + hlen + 2 <= len(body), "6", "truncated signature")
        self.hashed_part = body[:6 + hlen]
        self.hashed = read_subpackets(body[6:6 + hlen])
        ulen = int.from_bytes(body[6 + hlen:8 + hlen], "big")
        p = 8 + hlen + ulen
        need(p + 2 <= len(body), "6", "truncated signature")
        self.unhashed_len = ulen
        self.left16 = body[p:p + 2]
        p += 2
        if self.algo == 22:
            r, ok1, p = read_mpi(body, p)
            s, ok2, p = read_mpi(body, p)
            self.mpis_minimal = ok1 and ok2
            r, s = r.lstrip(b"\0"), s.lstrip(b"\0")
            need(len(r) <= 32 and len(s) <= 32, "6", "EdDSA signature values too long")
            self.sig = r.rjust(32, b"\0") + s.rjust(32, b"\0")
        elif self.algo == 27:
            need(len(body) - p == 64, "6", "Ed25519 signature not 64 bytes")
            self.sig, p, self.mpis_minimal = body[p:p + 64], p + 64, True
        else:
            raise Reject("6", f"signature algorithm {self.algo} not allowed")
        need(p == len(body), "6", "trailing bytes in signature packet")
        times = [d for t, _, d, _ in self.hashed if t == 2]
        self.created = int.from_bytes(times[0], "big") if len(times) == 1 and len(times[0]) == 4 else None

    def failure(self, key, prefix):
        """None if it verifies, else why: digest prefix, then strict Ed25519
        over the RFC 4880 §5.2.4 digest."""
        if self.hash_algo not in HASHES or self.algo != key.algo:
            return "algorithm"
        trailer = b"\x04\xff" + len(self.hashed_part).to_bytes(4, "big")
        digest = HASHES[self.hash_algo](prefix + self.hashed_part + trailer).digest()
        if digest[:2] != self.left16:
            return "digest prefix does not match"
        try:
            key.pub.verify(self.sig, digest)
            return None
        except InvalidSignature:
            return "signature does not verify"

    def verifies(self, key, prefix):
        return self.failure(key, prefix) is None

KNOWN_SELF_SUBPACKETS = {2, 3, 4, 5, 6, 7, 9, 11, 12, 16, 21, 22, 23, 24, 25, 26, 27, 28,
                         29, 30, 31, 32, 33, 34, 35, 37, 39}

class Certificate:
    """§6: the transferable public key of `keys/evidence.cert.asc`."""

    def __init__(self, data):
        packets = read_packets(dearmour_certificate(data))
        need(packets and packets[0][0] == 6, "6", "certificate does not start with a public key")
        self.key = PrimaryKey(packets[0][1])
        self.fpr = self.key.fpr
        self.selfsigs, self.revoked = [], False
        context = None  # None: the key itself; bytes: a user ID; "other": attribute/subkey
        for tag, body, _ in packets[1:]:
            need(tag in (2, 13, 14, 17), "6", f"certificate packet tag {tag} not allowed")
            if tag == 13:
                context = b"\xb4" + len(body).to_bytes(4, "big") + body
            elif tag in (14, 17):
                context = "other"
            else:
                self._signature(body, context)

    def _signature(self, body, context):
        try:
            sig = Signature(body)
        except Reject:
            return  # not a v4 EdDSA signature: cannot be by the primary key
        if sig.type == 0x20:
            if sig.verifies(self.key, self.key.prefix):
                self.revoked = True
            return
        if context == "other" or sig.hash_algo not in (8, 9, 10) or sig.created is None:
            return
        if sig.type == 0x1F and context is None:
            prefix = self.key.prefix
        elif 0x10 <= sig.type <= 0x13 and isinstance(context, bytes):
            prefix = self.key.prefix + context
        else:
            return
        if any(c and t not in KNOWN_SELF_SUBPACKETS for t, c, _, _ in sig.hashed):
            return
        if sig.verifies(self.key, prefix):
            self.selfsigs.append(sig)

    def check_usable(self, t, what):
        """§6: the primary key is usable at time t."""
        need(not self.revoked, "6", "evidence key is revoked")
        need(self.key.created <= t, "6", f"{what}: made before the key was created")
        for s in self.selfsigs:
            for typ, _, d, _ in s.hashed:
                if typ == 9:
                    need(len(d) == 4, "6", "bad key expiration subpacket")
                    exp = int.from_bytes(d, "big")
                    need(exp == 0 or self.key.created + exp >= t, "6", f"{what}: key expired")
        before = [s for s in self.selfsigs if s.created <= t]
        need(before, "6", f"{what}: no valid self-signature at signing time")
        newest = max(s.created for s in before)
        for s in before:
            if s.created == newest:
                flags = 0
                for typ, _, d, _ in s.hashed:
                    if typ == 27 and d:
                        flags |= d[0]
                need(flags & 0x02, "6", f"{what}: key not flagged for signing data")

    def verify_detached(self, asc, data, what):
        """§6 detached signature rules, then usability at its creation time."""
        packet = signature_from_armour(asc, what)
        need(len(packet) >= 2 and packet[0] == 0xC2, "6", f"{what}: not a new-format signature packet")
        o = packet[1]
        if o < 192:
            hl, length = 2, o
        elif o < 224:
            need(len(packet) >= 3, "6", f"{what}: truncated")
            hl, length = 3, ((o - 192) << 8) + packet[2] + 192
        elif o == 255:
            need(len(packet) >= 6, "6", f"{what}: truncated")
            hl, length = 6, int.from_bytes(packet[2:6], "big")
            need(length >= 8384, "6", f"{what}: packet length not shortest")
        else:
            raise Reject("6", f"{what}: partial packet length")
        need(hl + length == len(packet), "6", f"{what}: not exactly one packet")
        sig = Signature(packet[hl:])
        need(sig.type == 0x00, "6", f"{what}: not a binary-document signature")
        need(sig.algo == self.key.algo, "6", f"{what}: algorithm differs from the key's")
        need(sig.hash_algo in (8, 9, 10), "6", f"{what}: hash algorithm not allowed")
        need(sig.unhashed_len == 0, "6", f"{what}: unhashed subpacket area not empty")
        need(sig.mpis_minimal, "6", f"{what}: MPI not minimal")
        need(sig.created is not None, "6", f"{what}: needs exactly one creation time")
        for typ, crit, d, minimal in sig.hashed:
            need(minimal, "6", f"{what}: subpacket length not shortest")
            if typ == 33:
                need(d == b"\x04" + bytes.fromhex(self.fpr), "6", f"{what}: issuer fingerprint")
            elif typ == 16:
                need(d == bytes.fromhex(self.fpr)[-8:], "6", f"{what}: issuer key ID")
            elif typ in (2, 3):
                pass
            else:
                need(not crit, "6", f"{what}: critical subpacket {typ}")
        why = sig.failure(self.key, data)
        need(why is None, "6", f"{what}: {why}")
        self.check_usable(sig.created, what)

# ---------------------------------------------------------------- section 5

MEMBER = v_object({"name": v_str, "sha256": v_hex64, "size": v_uint})

def check_manifest(data, fpr):
    """§13.3 (shape part) and §5."""
    m = parse_json(data, "5", "manifest.json")
    need(isinstance(m, dict), "5", "manifest is not an object")
    need(m.get("version") in (1, 2) and type(m.get("version")) is int, "17",
         f"unknown manifest version {m.get('version')!r}")
    req = {"format": v_str, "version": v_uint, "created": v_time, "issuer": v_domain,
           "gateway_message_id": v_str, "recipient": v_address, "checkpoint_size": v_uint,
           "members": v_array(MEMBER)}
    if m["version"] == 2:
        req["issuer_key"] = v_fpr
    v_object(req)(m, "manifest")
    check_canonical(m, data, "manifest.json")
    need(m["format"] == "bote-proof-bundle", "5", "format is not bote-proof-bundle")
    need(m["created"][-4:] == "000Z", "5", "created has milliseconds")
    if m["version"] == 2:
        need(m["issuer_key"] == fpr, "5", "issuer_key is not the certificate's fingerprint")
    return m

def prescribed_names(version, n_records, with_tst):
    names = ["README.txt"]
    if version == 2:
        names.append("FORMAT.md")
    names.append("checkpoint")
    if with_tst:
        names.append("checkpoint.tst")
    names += ["keys/evidence.cert.asc", "keys/log.vkey"]
    for n in range(1, n_records + 1):
        names += [f"evidence/{record_name(n)}{s}" for s in (".json", ".json.asc", ".proof.json")]
    return names

def check_members(manifest, members):
    """§13.4 / §5 members list; returns the record count."""
    listed = [e["name"] for e in manifest["members"]]
    n = sum(1 for x in listed if re.fullmatch(rf"evidence/{NAME_NUM}\.json", x))
    need(n >= 1, "5", "no records")
    with_tst = manifest["version"] == 2 and "checkpoint.tst" in listed
    need(listed == prescribed_names(manifest["version"], n, with_tst), "5",
         "members are not the prescribed list")
    archive = dict(members)
    need([x for x, _ in members] == listed[:1] + ["manifest.json", "manifest.json.asc"] + listed[1:],
         "3", "archive members differ from the manifest's list")
    for e in manifest["members"]:
        c = archive[e["name"]]
        need(len(c) == e["size"], "5", f"{e['name']}: size differs")
        need(hashlib.sha256(c).hexdigest() == e["sha256"], "5", f"{e['name']}: SHA-256 differs")
    for name in ("README.txt", "FORMAT.md"):
        if name in archive:
            try:
                archive[name].decode("utf-8")
            except UnicodeDecodeError:
                raise Reject("1", f"{name}: not UTF-8")
            need(b"\r" not in archive[name], "1", f"{name}: carriage return")
    return n

# ---------------------------------------------------------------- section 10

class VKey:
    """A signed-note verifier key `<name>+<hex id>+<base64(type || key)>`."""

    def __init__(self, text, key_type, section):
        parts = text.split("+", 2)
        need(len(parts) == 3, section, f"malformed verifier key {text!r}")
        name, kid, b64 = parts
        need(name and not any(c.isspace() for c in name), section, "bad key name")
        need(re.fullmatch(r"[0-9a-f]{8}", kid) is not None, section, "bad key id")
        raw = b64_canonical(b64, section, "verifier key")
        need(len(raw) == 33 and raw[0] == key_type, section, "verifier key of wrong type or size")
        need(H(name.encode() + b"\n" + raw)[:4].hex() == kid, section, "key id does not match key")
        self.name, self.id, self.raw = name, bytes.fromhex(kid), raw
        self.pub = ed25519.Ed25519PublicKey.from_public_bytes(raw[1:])

    def same(self, other):
        return (self.name, self.id, self.raw) == (other.name, other.id, other.raw)

def ed_ok(pub, sig, msg):
    try:
        pub.verify(sig, msg)
        return True
    except InvalidSignature:
        return False

def parse_note(data, section):
    """C2SP signed note: (note text bytes, [(name, decoded signature)])."""
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject(section, "note is not UTF-8")
    need(all(c == "\n" or unicodedata.category(c) != "Cc" for c in s), section,
         "control character in note")
    i = s.find("\n\n")
    need(i > 0, section, "note has no text or no signature block")
    text, block = s[:i + 1], s[i + 2:]
    need(block.endswith("\n"), section, "signature block not LF-terminated")
    lines = block[:-1].split("\n")
    need(1 <= len(lines) <= 100, section, "note needs 1 to 100 signature lines")
    sigs, seen = [], set()
    for line in lines:
        need(line.startswith("\u2014 "), section, "malformed signature line")
        parts = line[2:].split(" ")
        need(len(parts) == 2, section, "malformed signature line")
        name, b64 = parts
        need(name and "+" not in name and not any(c.isspace() for c in name), section,
             "malformed signature name")
        raw = b64_canonical(b64, section, "signature line")
        need(len(raw) >= 5, section, "signature line too short")
        if line not in seen:  # repeated identical lines count once
            seen.add(line)
            sigs.append((name, raw))
    return text.encode(), sigs

def parse_checkpoint_text(text, section):
    """tlog-checkpoint body: exactly origin, size, root hash."""
    lines = text.decode()[:-1].split("\n")
    need(len(lines) == 3, section, "checkpoint text is not exactly three lines")
    origin, size, root = lines
    need(DEC_RE.fullmatch(size) is not None and int(size) < 2 ** 64, section, "bad tree size")
    root = b64_canonical(root, section, "root hash")
    need(len(root) == 32, section, "root hash is not 32 bytes")
    return origin, int(size), root

def verify_note(data, log_key, witnesses, section):
    """§10/§11: log signature must verify; trusted witness lines must verify.
    Returns (origin, size, root, text, {witness name: timestamp})."""
    text, sigs = parse_note(data, section)
    origin, size, root = parse_checkpoint_text(text, section)
    log_ok, cosigned = False, {}
    for name, raw in sigs:
        if name == log_key.name and raw[:4] == log_key.id:
            need(len(raw) == 68 and ed_ok(log_key.pub, raw[4:], text), section,
                 "log signature does not verify")
            log_ok = True
        for w in witnesses:
            if name == w.name and raw[:4] == w.id:
                need(len(raw) == 76, "11", f"cosignature by {w.name} malformed")
                ts = int.from_bytes(raw[4:12], "big")
                need(ts < 2 ** 63, "11", f"cosignature time of {w.name} too large")
                msg = b"cosignature/v1\ntime %d\n" % ts + text
                need(ed_ok(w.pub, raw[12:], msg), "11", f"cosignature by {w.name} does not verify")
                cosigned.setdefault(w.name, ts)
    need(log_ok, section, "no signature by the log key")
    need(origin == log_key.name, section, "origin is not the log key's name")
    return origin, size, root, text, cosigned

def read_log_key(content, version, anchored):
    """§10 keys/log.vkey (+ §13.6 anchoring)."""
    if version == 2:
        need(content.endswith(b"\n") and content.count(b"\n") == 1, "10",
             "log.vkey is not one line ending in LF")
        content = content[:-1]
    else:
        content = content.strip()
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise Reject("10", "log.vkey is not ASCII")
    need(text == text.strip(), "10", "whitespace in log.vkey")
    key = VKey(text, 0x01, "10")
    for a in anchored:
        need(key.same(a), "10", "log key is not the anchored one")
    return key

# ---------------------------------------------------------------- section 9

def node(left, right):
    return H(b"\x01" + left + right)

def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 §2.1.3.2, as written in §9."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root

PROOF_SHAPE = v_object({"entry": v_str, "inclusion": v_array(v_str, 64),
                        "log_index": v_uint, "tree_size": v_uint})

def check_proof(data, record_bytes, event, cp_size, cp_root, what):
    """§9: canonical proof, exact commitment, inclusion."""
    p = parse_json(data, "9", what)
    PROOF_SHAPE(p, what)
    check_canonical(p, data, what)
    entry = '{"event":"%s","record_sha256":"%s","version":1}' % (event, H(record_bytes).hex())
    need(p["entry"] == entry, "9", f"{what}: entry is not the record's commitment")
    need(p["tree_size"] == cp_size, "9", f"{what}: tree size is not the checkpoint's")
    need(p["log_index"] < p["tree_size"], "9", f"{what}: index beyond tree")
    proof = []
    for h in p["inclusion"]:
        raw = b64_canonical(h, "9", f"{what}: inclusion hash")
        need(len(raw) == 32, "9", f"{what}: inclusion hash not 32 bytes")
        proof.append(raw)
    leaf = H(b"\x00" + entry.encode())
    need(verify_inclusion(p["log_index"], p["tree_size"], leaf, proof, cp_root), "9",
         f"{what}: inclusion proof does not verify")
    return p["log_index"]

# ---------------------------------------------------------------- section 7

POSITIVE = {"SubmissionAcceptance", "RelayAcceptance", "RelayToNonERDS", "ReceivedFromNonERDS",
            "ContentConsignment", "ContentHandover"}
NEGATIVE = {"SubmissionRejection", "RelayRejection", "RelayFailure", "RelayToNonERDSFailure",
            "ContentConsignmentFailure", "ContentHandoverFailure"}
CHAIN_START = {"SubmissionAcceptance", "SubmissionRejection", "ReceivedFromNonERDS"}
NEGATIVE_REASONS = {"RA02", "RA03", "RA04", "RA05", "RB07", "RB08", "RB09", "RD03"}
LEVEL = v_enum("none", "normal", "high")
IDENTITY = v_object({"verified": v_bool},
                    {"method": v_enum("in-person", "eid", "qualified-signature")})
ATTACHMENT = v_object({"name": v_str, "sha256": v_hex64, "size": v_uint})
MESSAGE = v_object({"gateway_id": v_str, "sha256": v_hex64, "size": v_uint,
                    "attachments": v_array(ATTACHMENT, 20)},
                   {"message_id": v_str,
                    "all_attachments": v_object({"count": v_uint, "sha256": v_hex64})})
DETAILS_V1 = {"remote_host": v_str, "tls_version": v_str, "reply": v_str,
              "recipient_auth_level": LEVEL, "note": v_str}
RECORD_V1 = {"version": v_uint, "evidence_id": v_regex(r"[0-9a-f]{32}"),
             "event": v_enum(*(POSITIVE | NEGATIVE)), "reason": v_str, "time": v_time,
             "issuer": v_domain,
             "sender": v_object({"address": v_address, "identity": IDENTITY, "auth_level": LEVEL}),
             "recipient": v_address, "message": MESSAGE, "details": v_object({}, DETAILS_V1)}
RECORD_V2 = dict(RECORD_V1,
                 details=v_object({}, dict(DETAILS_V1, member=v_regex(r"[ut]-[0-9a-f]{16}"))),
                 policy=v_enum("urn:bote:evidence-policy:1"), issuer_key=v_fpr,
                 time_source=v_enum("gateway-clock"), submission_time=v_time,
                 chain=v_object({"seq": v_uint}, {"prev": v_hex64}))
RECORD_V2_OPTIONAL = {"options": v_object({"authoritative": v_bool, "personal": v_bool,
                                           "retrieval_confirmation": v_bool}),
                      "recipient_identity": IDENTITY}

def check_record(data, manifest_version, what):
    """§7 shape of one record, canonical (§4)."""
    r = parse_json(data, "7", what)
    need(isinstance(r, dict), "7", f"{what}: not an object")
    v = r.get("version")
    need(type(v) is int and v in (1, 2), "17", f"{what}: unknown record version {v!r}")
    need(v <= manifest_version, "7", f"{what}: version 2 record in a version 1 bundle")
    if v == 1:
        v_object(RECORD_V1)(r, what)
    else:
        v_object(RECORD_V2, RECORD_V2_OPTIONAL)(r, what)
    check_canonical(r, data, what)
    if r["event"] in POSITIVE:
        need(r["reason"] == "RA01", "7", f"{what}: positive event without RA01")
    else:
        need(r["reason"] in NEGATIVE_REASONS, "7", f"{what}: bad reason {r['reason']!r}")
    msg = r["message"]
    if "all_attachments" in msg:
        need(msg["all_attachments"]["count"] > 20 and len(msg["attachments"]) == 20, "7",
             f"{what}: all_attachments inconsistent")
    if v == 2:
        seq = r["chain"]["seq"]
        need(seq >= 1, "7", f"{what}: chain.seq < 1")
        need(("prev" in r["chain"]) == (seq != 1), "8", f"{what}: chain.prev present iff seq > 1")
    return r

def check_chain(manifest, records, raw_records, indexes, fpr):
    """§8 rules 2-8 over the records (rule 1 is checked per record)."""
    for n in range(1, len(records) + 1):
        r, what = records[n - 1], f"evidence/{record_name(n)}.json"
        if n > 1:
            need(indexes[n - 1] > indexes[n - 2], "8", f"{what}: log index not increasing")
            need(not (r["version"] == 1 and records[n - 2]["version"] == 2), "8",
                 f"{what}: version 1 record after version 2")
        if r["version"] != 2:
            continue
        need(r["issuer_key"] == fpr, "8", f"{what}: issuer_key is not the evidence key")
        need(r["chain"]["seq"] == n, "8", f"{what}: chain.seq is not {n}")
        need((n == 1) == (r["event"] in CHAIN_START), "8", f"{what}: chain start mismatch")
        if records[0]["version"] == 2:
            need("options" in r, "7", f"{what}: options missing in a version 2 chain")
        if n > 1:
            need(r["chain"]["prev"] == H(raw_records[n - 2]).hex(), "8", f"{what}: chain.prev wrong")
            prev = records[n - 2]
            if prev["version"] == 2:
                need(r["submission_time"] == prev["submission_time"], "8",
                     f"{what}: submission_time differs")
                need(r.get("options") == prev.get("options"), "8", f"{what}: options differ")
                need(r["message"] == prev["message"], "8", f"{what}: message differs")
                need(r["sender"] == prev["sender"], "8", f"{what}: sender differs")

# ---------------------------------------------------------------- section 12 (DER)

class Der:
    """One DER TLV; `raw` is the whole encoding, `content` the value."""

    def __init__(self, tag, raw, content):
        self.tag, self.raw, self.content = tag, raw, content

    @property
    def constructed(self):
        return bool(self.tag & 0x20)

    def kids(self):
        out, pos = [], 0
        while pos < len(self.content):
            d, pos = der_read(self.content, pos)
            out.append(d)
        return out

def der_read(data, pos):
    need(pos + 2 <= len(data), "12", "DER truncated")
    tag = data[pos]
    need(tag & 0x1F != 0x1F, "12", "DER high tag numbers not expected")
    o, p = data[pos + 1], pos + 2
    if o < 0x80:
        length = o
    else:
        n = o & 0x7F
        need(1 <= n <= 4, "12", "DER indefinite or huge length")
        need(p + n <= len(data), "12", "DER truncated")
        length = int.from_bytes(data[p:p + n], "big")
        need(data[p] != 0 and length >= 0x80, "12", "DER length not shortest")
        p += n
    need(p + length <= len(data), "12", "DER truncated")
    return Der(tag, data[pos:p + length], data[p:p + length]), p + length

def der_one(data):
    d, end = der_read(data, 0)
    need(end == len(data), "12", "trailing bytes after DER")
    return d

def der_set_ok(d):
    encs = [k.raw for k in d.kids()]
    need(all(a < b for a, b in zip(encs, encs[1:])), "12", "SET OF not sorted and distinct")

def der_strict(d):
    """Recursive DER checks of a whole structure."""
    t = d.tag
    if d.constructed:
        need(t & 0xC0 != 0 or t in (0x30, 0x31), "12", "constructed string (BER)")
        kids = d.kids()
        if t == 0x31:
            der_set_ok(d)
        for k in kids:
            der_strict(k)
    elif t == 0x01:
        need(d.content in (b"\x00", b"\xff"), "12", "BOOLEAN not DER")
    elif t in (0x02, 0x0A):
        c = d.content
        need(c and not (len(c) > 1 and (c[0] == 0 and c[1] < 0x80 or c[0] == 0xFF and c[1] >= 0x80)),
             "12", "INTEGER not minimal")
    elif t == 0x05:
        need(d.content == b"", "12", "NULL not empty")
    elif t == 0x03:
        c = d.content
        need(c and c[0] < 8 and (len(c) > 1 or c[0] == 0), "12", "BIT STRING malformed")
        need(len(c) == 1 or c[-1] & ((1 << c[0]) - 1) == 0, "12", "BIT STRING unused bits set")
    elif t == 0x06:
        need(d.content and d.content[-1] < 0x80, "12", "OID malformed")
        need(all(not (b == 0x80 and (i == 0 or d.content[i - 1] < 0x80))
                 for i, b in enumerate(d.content)), "12", "OID not minimal")

def der_oid(d):
    need(d.tag == 0x06, "12", "expected OID")
    vals, v = [], 0
    for b in d.content:
        v = (v << 7) | (b & 0x7F)
        if not b & 0x80:
            vals.append(v)
            v = 0
    first = min(vals[0] // 40, 2)
    return ".".join(str(x) for x in [first, vals[0] - 40 * first] + vals[1:])

def der_int(d):
    need(d.tag == 0x02, "12", "expected INTEGER")
    return int.from_bytes(d.content, "big", signed=True)

def kids_of(d, tag, what, counts=None):
    need(d.tag == tag, "12", f"{what}: unexpected tag {d.tag:#x}")
    k = d.kids()
    need(counts is None or len(k) in counts, "12", f"{what}: wrong number of elements")
    return k

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TSTINFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_CERT = "1.2.840.113549.1.9.16.2.12"
OID_SIGNING_CERT_V2 = "1.2.840.113549.1.9.16.2.47"
DIGESTS = {"2.16.840.1.101.3.4.2.1": hashes.SHA256, "2.16.840.1.101.3.4.2.2": hashes.SHA384,
           "2.16.840.1.101.3.4.2.3": hashes.SHA512}
RSA_SIG = {"1.2.840.113549.1.1.11": hashes.SHA256, "1.2.840.113549.1.1.12": hashes.SHA384,
           "1.2.840.113549.1.1.13": hashes.SHA512}
OID_RSA = "1.2.840.113549.1.1.1"
ECDSA_SIG = {"1.2.840.10045.4.3.2": (hashes.SHA256, "secp256r1"),
             "1.2.840.10045.4.3.3": (hashes.SHA384, "secp384r1")}
OID_ED25519 = "1.3.101.112"

def alg_id(d, what):
    """AlgorithmIdentifier -> (oid, params node or None)."""
    k = kids_of(d, 0x30, what, (1, 2))
    return der_oid(k[0]), (k[1] if len(k) == 2 else None)

def digest_alg(d, what):
    oid, params = alg_id(d, what)
    need(oid in DIGESTS, "12", f"{what}: digest {oid} not allowed")
    need(params is None or params.raw == b"\x05\x00", "12", f"{what}: digest parameters")
    return DIGESTS[oid]

def digest(alg, data):
    h = hashes.Hash(alg())
    h.update(data)
    return h.finalize()

def gen_time(d):
    need(d.tag == 0x18, "12", "genTime is not GeneralizedTime")
    s = d.content.decode("ascii", "replace")
    need(re.fullmatch(r"\d{14}Z", s) is not None, "12", "genTime not YYYYMMDDHHMMSSZ")
    try:
        dt = datetime.datetime.strptime(s, "%Y%m%d%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Reject("12", "genTime invalid")
    return int(dt.timestamp())

def check_tstinfo(data, note_text):
    """§12.2: TSTInfo; returns genTime (unix seconds)."""
    t = der_one(data)
    der_strict(t)
    k = kids_of(t, 0x30, "TSTInfo")
    need(len(k) >= 5 and der_int(k[0]) == 1, "12", "TSTInfo version is not 1")
    der_oid(k[1])
    mi = kids_of(k[2], 0x30, "messageImprint", (2,))
    oid, params = alg_id(mi[0], "messageImprint")
    need(oid == "2.16.840.1.101.3.4.2.1" and params is not None and params.raw == b"\x05\x00",
         "12", "messageImprint is not SHA-256 with NULL parameters")
    need(mi[1].tag == 0x04 and mi[1].content == H(note_text), "12",
         "messageImprint is not the checkpoint's note text")
    der_int(k[3])
    gt = gen_time(k[4])
    order = [0x30, 0x01, 0x02, 0xA0, 0xA1]  # accuracy ordering nonce tsa extensions
    pos = 0
    for x in k[5:]:
        while pos < len(order) and order[pos] != x.tag:
            pos += 1
        need(pos < len(order), "12", "TSTInfo: unexpected field")
        pos += 1
        if x.tag == 0x01:
            need(x.content == b"\xff", "12", "TSTInfo: DEFAULT ordering encoded")
        if x.tag == 0xA1:
            for ext in x.kids():
                ek = kids_of(ext, 0x30, "extension", (2, 3))
                need(not (len(ek) == 3 and ek[1].tag == 0x01 and ek[1].content == b"\xff"),
                     "12", "TSTInfo: critical extension")
    return gt

class TsaCert:
    """The pieces of an X.509 certificate §12 needs."""

    def __init__(self, d):
        self.der = d.raw
        c = kids_of(d, 0x30, "certificate", (3,))
        tbs = kids_of(c[0], 0x30, "tbsCertificate")
        i = 1 if tbs and tbs[0].tag == 0xA0 else 0
        self.serial, self.issuer = tbs[i].raw, tbs[i + 2].raw
        self.spki_alg = der_oid(kids_of(kids_of(tbs[i + 5], 0x30, "spki")[0], 0x30, "alg")[0])
        try:
            self.x509 = x509.load_der_x509_certificate(self.der)
            self.pub = self.x509.public_key()
        except Exception as e:  # noqa: BLE001 - any parse failure rejects
            raise Reject("12", f"TSA certificate unreadable: {e}")
        self.sha256 = hashlib.sha256(self.der).hexdigest()

    def ski(self):
        try:
            return self.x509.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except (x509.ExtensionNotFound, ValueError):
            return None

def check_ess(attr_oid, value, cert):
    """§12.5 ESS signing-certificate(V2): first cert ID names the TSA certificate."""
    sc = kids_of(value, 0x30, "SigningCertificate", (1, 2))
    ids = kids_of(sc[0], 0x30, "certs")
    need(ids, "12", "SigningCertificate lists no certificate")
    k = kids_of(ids[0], 0x30, "ESSCertID")
    if attr_oid == OID_SIGNING_CERT_V2:
        alg = hashes.SHA256
        if k and k[0].tag == 0x30:
            alg = digest_alg(k.pop(0), "ESSCertIDv2")
        want = digest(alg, cert.der)
    else:
        want = hashlib.sha1(cert.der).digest()
    need(k and k[0].tag == 0x04 and k[0].content == want, "12", "ESS certHash does not match")
    need(len(k) <= 2, "12", "ESSCertID malformed")
    if len(k) == 2:
        iss = kids_of(k[1], 0x30, "IssuerSerial", (2,))
        names = kids_of(iss[0], 0x30, "GeneralNames")
        need(len(names) == 1 and names[0].tag == 0xA4 and names[0].content == cert.issuer
             and iss[1].raw == cert.serial, "12", "ESS issuerSerial does not name the certificate")

def check_signature(sig_alg, signature, data, cert, dig):
    """§12.6 signature over the DER of the signed attributes."""
    oid, params = alg_id(sig_alg, "signatureAlgorithm")
    pub = cert.pub
    try:
        if oid == OID_RSA or oid in RSA_SIG:
            need(params is not None and params.raw == b"\x05\x00", "12", "RSA parameters not NULL")
            need(oid == OID_RSA or RSA_SIG[oid] is dig, "12", "RSA hash differs from digest")
            need(cert.spki_alg == OID_RSA and isinstance(pub, rsa.RSAPublicKey), "12",
                 "certificate key is not rsaEncryption")
            pub.verify(signature, data, padding.PKCS1v15(), dig())
        elif oid in ECDSA_SIG:
            alg, curve = ECDSA_SIG[oid]
            need(params is None, "12", "ECDSA parameters present")
            need(dig is alg and isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.name == curve,
                 "12", "ECDSA curve/hash combination not allowed")
            try:
                ok = encode_dss_signature(*decode_dss_signature(signature)) == signature
            except ValueError:
                ok = False
            need(ok, "12", "ECDSA signature not DER")
            pub.verify(signature, data, ec.ECDSA(alg()))
        elif oid == OID_ED25519:
            need(params is None, "12", "Ed25519 parameters present")
            need(isinstance(pub, ed25519.Ed25519PublicKey), "12", "certificate key is not Ed25519")
            pub.verify(signature, data)
        else:
            raise Reject("12", f"signature algorithm {oid} not allowed")
    except InvalidSignature:
        raise Reject("12", "time-stamp signature does not verify")

def check_timestamp(token, note_text, anchors):
    """§12: returns (genTime, certificate SHA-256 hex, anchored?)."""
    ci = der_one(token)
    der_strict(ci)
    k = kids_of(ci, 0x30, "ContentInfo", (2,))
    need(der_oid(k[0]) == OID_SIGNED_DATA, "12", "not SignedData")
    sd = kids_of(kids_of(k[1], 0xA0, "content", (1,))[0], 0x30, "SignedData")
    need(len(sd) >= 4 and der_int(sd[0]) == 3, "12", "SignedData version is not 3")
    dig_algs = kids_of(sd[1], 0x31, "digestAlgorithms")
    encap = kids_of(sd[2], 0x30, "encapContentInfo", (2,))
    need(der_oid(encap[0]) == OID_TSTINFO, "12", "content is not TSTInfo")
    octets = kids_of(encap[1], 0xA0, "eContent", (1,))[0]
    need(octets.tag == 0x04, "12", "eContent is not an OCTET STRING")
    tstinfo = octets.content
    rest = sd[3:]
    certs = []
    if rest and rest[0].tag == 0xA0:
        der_set_ok(rest[0])
        for c in rest.pop(0).kids():
            need(c.tag == 0x30, "12", "certificate choice other than X.509")
            certs.append(TsaCert(c))
    need(not (rest and rest[0].tag == 0xA1), "12", "crls not allowed")
    need(len(rest) == 1, "12", "SignedData: unexpected fields")
    signers = kids_of(rest[0], 0x31, "signerInfos")
    need(len(signers) == 1, "12", "not exactly one SignerInfo")
    si = kids_of(signers[0], 0x30, "SignerInfo", (6,))  # 7 would mean unsigned attributes
    gt = check_tstinfo(tstinfo, note_text)
    # §12.3 signer identifier, digest algorithms
    version, sid = der_int(si[0]), si[1]
    dig = digest_alg(si[2], "SignerInfo digest")
    need(len(dig_algs) == 1 and dig_algs[0].raw == si[2].raw, "12",
         "digestAlgorithms is not exactly the signer's")
    if sid.tag == 0x30:
        need(version == 1, "12", "SignerInfo version is not 1")
        ias = kids_of(sid, 0x30, "IssuerAndSerialNumber", (2,))
        match = [c for c in certs if c.issuer == ias[0].raw and c.serial == ias[1].raw]
    else:
        need(sid.tag == 0x80 and version == 3, "12", "bad signer identifier/version")
        match = [c for c in certs if c.ski() == sid.content]
    need(len(match) == 1, "12", "TSA certificate not found (exactly once) in the token")
    cert = match[0]
    # §12.5 signed attributes
    attrs = si[3]
    need(attrs.tag == 0xA0, "12", "no signed attributes")
    der_set_ok(attrs)
    found = {}
    for a in attrs.kids():
        ak = kids_of(a, 0x30, "Attribute", (2,))
        oid = der_oid(ak[0])
        vals = kids_of(ak[1], 0x31, "attribute values")
        found.setdefault(oid, []).append(vals)
    for oid in (OID_CONTENT_TYPE, OID_MESSAGE_DIGEST):
        need(len(found.get(oid, [])) == 1 and len(found[oid][0]) == 1, "12",
             f"not exactly one attribute {oid}")
    need(der_oid(found[OID_CONTENT_TYPE][0][0]) == OID_TSTINFO, "12", "content-type attribute")
    md = found[OID_MESSAGE_DIGEST][0][0]
    need(md.tag == 0x04 and md.content == digest(dig, tstinfo), "12", "message-digest attribute")
    ess = OID_SIGNING_CERT_V2 if OID_SIGNING_CERT_V2 in found else OID_SIGNING_CERT
    need(len(found.get(ess, [])) == 1 and len(found[ess][0]) == 1, "12",
         "no (single) ESS signing-certificate attribute")
    check_ess(ess, found[ess][0][0], cert)
    # §12.6 signature
    sig = si[5]
    need(sig.tag == 0x04, "12", "signature is not an OCTET STRING")
    check_signature(si[4], sig.content, b"\x31" + attrs.raw[1:], cert, dig)
    # §12.7 extended key usage and validity
    try:
        eku = cert.x509.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise Reject("12", "TSA certificate has no extended key usage")
    except ValueError as e:
        raise Reject("12", f"TSA certificate extensions unreadable: {e}")
    need(eku.critical and list(eku.value) == [ExtendedKeyUsageOID.TIME_STAMPING], "12",
         "extended key usage is not critical timeStamping alone")
    nb = int(cert.x509.not_valid_before_utc.timestamp())
    na = int(cert.x509.not_valid_after_utc.timestamp())
    need(nb <= gt <= na, "12", "genTime outside the certificate's validity")
    # §12.8 anchoring
    if anchors:
        need(cert.sha256 in anchors, "12", "TSA certificate is not a trusted one")
    return gt, cert.sha256, bool(anchors)

# ---------------------------------------------------------------- section 14

def verify_consistency(m, n, old_root, new_root, proof):
    """RFC 9162 §2.1.4.2, as written in §14."""
    if m == n:
        return not proof and old_root == new_root
    if m == 0 or m > n:
        return False
    if m & (m - 1) == 0:
        proof = [old_root] + proof
    if not proof:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node(c, fr), node(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0

def check_trusted_checkpoint(opts, log_key, witnesses, origin, size, root):
    """§13.10 / §14."""
    try:
        with open(opts.checkpoint, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BadInvocation(f"cannot read {opts.checkpoint}: {e}")
    t_origin, t_size, t_root, _, _ = verify_note(data, log_key, witnesses, "14")
    need(t_origin == origin, "14", "trusted checkpoint has another origin")
    need(t_size >= size, "14", "trusted checkpoint is older than the bundle's")
    proof = []
    if opts.consistency:
        try:
            with open(opts.consistency, "rb") as f:
                c = json.loads(f.read().decode("utf-8"), object_pairs_hook=_no_dupes,
                               parse_float=_no_float, parse_constant=_no_float)
        except (OSError, UnicodeDecodeError, ValueError):
            raise Reject("14", "consistency file unreadable")
        v_object({"consistency": v_array(v_str)})(c, "consistency")
        for h in c["consistency"]:
            raw = b64_canonical(h, "14", "consistency hash")
            need(len(raw) == 32, "14", "consistency hash not 32 bytes")
            proof.append(raw)
    elif t_size > size:
        raise Reject("14", "trusted checkpoint is larger and no consistency proof is given")
    need(verify_consistency(size, t_size, root, t_root, proof), "14",
         "bundle's tree is not a prefix of the trusted checkpoint's (fork)")

# ---------------------------------------------------------------- section 15

class Trust:
    def __init__(self):
        self.gateways, self.witnesses, self.quorum, self.tsas = [], [], None, set()

def read_trust_file(path):
    """§15 trust file; any malformed directive invalidates the whole file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInvocation(f"cannot read trust file: {e}")
    t = Trust()
    bad = lambda why: Reject("15", f"trust file invalid: {why}")
    if "\r" in text or "\t" in text:
        raise bad("carriage return or tab")
    for line in text.split("\n"):
        if line.strip(" ") == "" or line.startswith("#"):
            continue
        w = [x for x in line.split(" ") if x]
        if w[0] == "gateway" and len(w) in (3, 4):
            if not is_domain(w[1].lower()) or not re.fullmatch(r"[0-9A-Fa-f]{40}", w[2]):
                raise bad(line)
            log = VKey(w[3], 0x01, "15") if len(w) == 4 else None
            if any(g[:2] == (w[1].lower(), w[2].upper()) for g in t.gateways):
                raise bad(f"a second gateway line for {w[1]} {w[2]}")
            t.gateways.append((w[1].lower(), w[2].upper(), log))
        elif w[0] == "witness" and len(w) == 2:
            t.witnesses.append(VKey(w[1], 0x04, "15"))
        elif w[0] == "quorum" and len(w) == 2 and DEC_RE.fullmatch(w[1]) and t.quorum is None:
            t.quorum = int(w[1])
        elif w[0] == "tsa" and len(w) >= 2 and HEX64.fullmatch(w[1].lower()):
            # §15 (clarified): hex digits of either case.
            t.tsas.add(w[1].lower())
        else:
            raise bad(line)
    if not t.gateways:
        raise bad("no gateway")
    distinct = {(w.name, w.id, w.raw) for w in t.witnesses}
    if t.quorum is not None and t.quorum > len(distinct):
        raise bad("quorum larger than the number of witnesses")
    return t

# ---------------------------------------------------------------- section 13

def peek_issuer(members):
    try:
        m = json.loads(dict(members)["manifest.json"].decode("utf-8"))
        return m["issuer"] if isinstance(m["issuer"], str) else None
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        raise Reject("5", "manifest.json unreadable")

def verify(data, opts, trust):
    """Section 13, in order. Returns (anchored, fingerprint, report lines)."""
    report = []
    # 1. the archive
    members = read_archive(data)
    files = dict(members)
    for name in ("manifest.json", "manifest.json.asc", "keys/evidence.cert.asc"):
        need(name in files, "3", f"{name} missing")
    # 2. anchor the evidence key
    cert = Certificate(files["keys/evidence.cert.asc"])
    anchored, log_anchors = False, list(opts.log_keys)
    if opts.key:
        need(cert.fpr == opts.key, "13.2", f"certificate {cert.fpr} is not the given key")
        anchored = True
    if trust:
        issuer = peek_issuer(members)
        entries = [g for g in trust.gateways if g[0] == issuer and g[1] == cert.fpr]
        need(entries, "15", f"key {cert.fpr} is not listed for gateway {issuer!r}")
        log_anchors += [g[2] for g in entries if g[2] is not None]
        anchored = True
    # 3. manifest signature and manifest
    cert.verify_detached(files["manifest.json.asc"], files["manifest.json"], "manifest.json.asc")
    manifest = check_manifest(files["manifest.json"], cert.fpr)
    version = manifest["version"]
    # 4. members
    n_records = check_members(manifest, members)
    # 5. canonical archive
    mtime = parse_time(manifest["created"], "5", "created") // 1000
    need(canonical_archive(members, mtime) == data, "2", "archive is not canonically encoded")
    # 6. log key and checkpoint
    log_key = read_log_key(files["keys/log.vkey"], version, log_anchors)
    need(log_key.name == manifest["issuer"] + "/log", "10", "log key name is not <issuer>/log")
    origin, size, root, text, cosigned = verify_note(files["checkpoint"], log_key,
                                                     opts.witnesses, "10")
    need(size == manifest["checkpoint_size"], "10", "checkpoint size differs from the manifest's")
    # 7. witnesses and time-stamp
    need(len(cosigned) >= opts.quorum, "11",
         f"{len(cosigned)} trusted cosignatures, quorum is {opts.quorum}")
    for name, ts in cosigned.items():
        report.append(f"cosigned: {name} {ts}")
    gen = None
    if "checkpoint.tst" in files:
        gen, cert_hash, tsa_anchored = check_timestamp(files["checkpoint.tst"], text, opts.tsas)
        report.append(f"time-stamp: {gen} {cert_hash}" + ("" if tsa_anchored else " (TSA not anchored)"))
    else:
        need(not opts.tsas, "12", "a time-stamp is required but absent")
    # 8. records
    records, raws, indexes = [], [], []
    for n in range(1, n_records + 1):
        base = f"evidence/{record_name(n)}"
        raw = files[base + ".json"]
        r = check_record(raw, version, base + ".json")
        cert.verify_detached(files[base + ".json.asc"], raw, base + ".json.asc")
        need(r["message"]["gateway_id"] == manifest["gateway_message_id"], "8",
             f"{base}.json: another message")
        need(r["recipient"].lower() == manifest["recipient"].lower(), "8", f"{base}.json: another recipient")
        need(r["issuer"] == manifest["issuer"], "8", f"{base}.json: another issuer")
        indexes.append(check_proof(files[base + ".proof.json"], raw, r["event"], size, root,
                                   base + ".proof.json"))
        records.append(r)
        raws.append(raw)
    # 9. chain, time-stamp bound
    check_chain(manifest, records, raws, indexes, cert.fpr)
    if gen is not None:
        for n, r in enumerate(records, 1):
            need(parse_time(r["time"], "7", "time") <= gen * 1000 + 300000, "12",
                 f"record {n} is later than the time-stamp")
    # 10. trusted checkpoint
    if opts.checkpoint:
        check_trusted_checkpoint(opts, log_key, opts.witnesses, origin, size, root)
    report.insert(0, f"verified: {n_records} records")
    return anchored, cert.fpr, report

def parse_args(argv):
    p = argparse.ArgumentParser(prog="verify_bundle.py", allow_abbrev=False, add_help=False)
    p.add_argument("bundle", nargs="?")
    p.add_argument("--key")
    p.add_argument("--trust")
    p.add_argument("--log-key", dest="log_key")
    p.add_argument("--witness", action="append", default=[])
    p.add_argument("--quorum")
    p.add_argument("--tsa", action="append", default=[])
    p.add_argument("--checkpoint")
    p.add_argument("--consistency")
    p.add_argument("--allow-unanchored", action="store_true")
    p.add_argument("--corpus", help=argparse.SUPPRESS)

    def error(msg):
        raise BadInvocation(msg)
    p.error = error
    o = p.parse_args(argv)
    if o.corpus:
        return o
    if not o.bundle:
        raise BadInvocation("no bundle given")
    if o.key is not None:
        k = o.key.replace(" ", "")
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", k):
            raise BadInvocation("--key needs a 40-hex fingerprint")
        o.key = k.upper()
    if o.consistency and not o.checkpoint:
        raise BadInvocation("--consistency needs --checkpoint")
    try:
        o.log_keys = [VKey(o.log_key, 0x01, "16")] if o.log_key else []
        o.witnesses = [VKey(w, 0x04, "16") for w in o.witness]
    except Reject as e:
        raise BadInvocation(str(e))
    o.tsas = set()
    for t in o.tsa:
        if not re.fullmatch(r"[0-9A-Fa-f]{64}", t):
            raise BadInvocation("--tsa needs 64 hex digits")
        o.tsas.add(t.lower())
    if o.quorum is not None and not DEC_RE.fullmatch(o.quorum):
        raise BadInvocation("--quorum needs a number")
    return o

def main(argv):
    try:
        opts = parse_args(argv)
        if opts.corpus:
            return run_corpus(opts.corpus)
        trust = read_trust_file(opts.trust) if opts.trust else None
        quorums = [int(opts.quorum)] if opts.quorum is not None else []
        if trust:
            opts.witnesses += trust.witnesses
            opts.tsas |= trust.tsas
            if trust.quorum is not None:
                quorums.append(trust.quorum)
        distinct = {(w.name, w.id, w.raw): w for w in opts.witnesses}
        opts.witnesses = list(distinct.values())
        opts.quorum = max(quorums) if quorums else (1 if opts.witnesses else 0)
        if opts.quorum > len(opts.witnesses):
            raise BadInvocation("quorum larger than the number of trusted witnesses")
        try:
            with open(opts.bundle, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadInvocation(f"cannot read bundle: {e}")
        anchored, fpr, report = verify(data, opts, trust)
    except BadInvocation as e:
        print(f"usage error: {e}", file=sys.stderr)
        return 2
    except Reject as e:
        print(f"rejected: {e.section}: {e.reason}", file=sys.stderr)
        return 1
    if not anchored and not opts.allow_unanchored:
        print(f"rejected: 16: nothing anchors the evidence key {fpr}", file=sys.stderr)
        return 1
    for line in report:
        print(line)
    if anchored:
        return 0
    print(f"not anchored: evidence key fingerprint {fpr}")
    return 3

def run_corpus(directory):
    """Hidden driver: run every case of DIR/expect.json, report disagreements."""
    with open(os.path.join(directory, "expect.json")) as f:
        cases = json.load(f)
    here, bad = os.getcwd(), 0
    os.chdir(directory)
    try:
        for c in cases:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main([c["file"]] + list(c["args"]))
            accepted = code == 0
            mark = "ok " if accepted == c["accept"] else "BAD"
            bad += accepted != c["accept"]
            msg = (err.getvalue() or out.getvalue()).strip().replace("\n", " | ")
            print(f"{mark} exit={code} {c['file']} expect={'accept' if c['accept'] else 'reject'}"
                  f" :: {c.get('why', '')} :: {msg}")
    finally:
        os.chdir(here)
    print(f"{len(cases) - bad}/{len(cases)} agree")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
