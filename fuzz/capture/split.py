#!/usr/bin/env python3
"""Cuts a loopback capture of real EPMD and distribution traffic into fuzz inputs.

Reads a classic pcap file (tcpdump -w on `lo`), reassembles every TCP connection and
writes, under CORPUS/<target>/, one file per input, named by the SHA-1 of its content
(as libFuzzer names its own):

* epmd_request:        Ctl:8 | Len:16 | Request records (ctl 5: a local peer that may register)
* epmd_replies:        Which:8 | Reply, Which from the request the reply answers
* handshake_acceptor:  Choice:8 | Challenge:32 | the initiator's handshake frames
* handshake_initiator: Choice:8 | Challenge:32 | Nlen:8 | PeerName | the acceptor's frames
* handshake_messages:  Which:8 | one handshake message
* dist_frame:          the bytes after the handshake, a few frames per file
* term_decode:         the term_to_binary files of --terms, as they are
* etcd_value:          the node key values of --etcd-values, as they are

The formats are those the targets in fuzz_targets/ document.
"""
import argparse
import hashlib
import os
import struct
import sys

EPMD_WHICH = {120: 0, 122: 1, 110: 2, 100: 3, 107: 4, 115: 5}
MAX_FILE = 16 * 1024


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        sys.exit(f"split: {path} is not a classic pcap file")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20}.get(linktype)
    if link_len is None:
        sys.exit(f"split: unsupported link type {linktype}")
    at = 24
    while at + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        frame = data[at + 16:at + 16 + incl]
        at += 16 + incl
        ip = frame[link_len:]
        if not ip:
            continue
        version = ip[0] >> 4
        if version == 4:
            ihl = (ip[0] & 15) * 4
            if ip[9] != 6:
                continue
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:total]
        elif version == 6:
            if ip[6] != 6:
                continue
            tcp = ip[40:40 + struct.unpack(">H", ip[4:6])[0]]
        else:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        flags = tcp[13]
        off = (tcp[12] >> 4) * 4
        yield sport, dport, seq, flags, tcp[off:]


def connections(path):
    """Every connection as (client_port, server_port, client_bytes, server_bytes)."""
    flows = {}  # (sport, dport) -> current connection's segments
    done = []
    for sport, dport, seq, flags, payload in packets(path):
        syn, ack = flags & 2, flags & 16
        if syn and not ack:
            key = (sport, dport)
            if key in flows:
                done.append(flows.pop(key))
            flows[key] = {"client": (sport, dport), "isn": {}, "segs": {}}
        conn = flows.get((sport, dport)) or flows.get((dport, sport))
        if conn is None:
            continue
        side = "c" if (sport, dport) == conn["client"] else "s"
        if syn:
            conn["isn"][side] = seq + 1
            continue
        if payload:
            conn["segs"].setdefault(side, []).append((seq, payload))
    done.extend(flows.values())
    for conn in done:
        streams = {}
        for side in "cs":
            segs = sorted(conn["segs"].get(side, []))
            if not segs:
                streams[side] = b""
                continue
            nxt = conn["isn"].get(side, segs[0][0])
            out = bytearray()
            for seq, payload in segs:
                # Sequence numbers wrap; loopback captures are short, so relative
                # offsets within 2^31 are enough.
                rel = (seq - nxt) & 0xFFFFFFFF
                if rel >= 1 << 31:  # starts before nxt: overlap
                    skip = (nxt - seq) & 0xFFFFFFFF
                    if skip < len(payload):
                        out += payload[skip:]
                        nxt = (nxt + len(payload) - skip) & 0xFFFFFFFF
                elif rel == 0:
                    out += payload
                    nxt = (nxt + len(payload)) & 0xFFFFFFFF
            streams[side] = bytes(out)
        yield conn["client"][0], conn["client"][1], streams["c"], streams["s"]


def prefixed(stream, width):
    """Splits length-prefixed messages; returns (messages, bytes used)."""
    msgs, at = [], 0
    while at + width <= len(stream):
        n = int.from_bytes(stream[at:at + width], "big")
        if at + width + n > len(stream):
            break
        msgs.append(stream[at + width:at + width + n])
        at += width + n
    return msgs, at


class Corpus:
    def __init__(self, root):
        self.root = root
        self.counts = {}

    def put(self, target, data):
        if not data:
            return
        d = os.path.join(self.root, target)
        os.makedirs(d, exist_ok=True)
        name = os.path.join(d, hashlib.sha1(data).hexdigest())
        if not os.path.exists(name):
            with open(name, "wb") as f:
                f.write(data)
            self.counts[target] = self.counts.get(target, 0) + 1


def handshake(corpus, client, server):
    """One distribution connection: the handshake both ways, then the frames."""
    c_msgs, c_used = prefixed(client, 2)
    s_msgs, s_used = prefixed(server, 2)
    c_msgs, s_msgs = c_msgs[:2], s_msgs[:3]
    c_used = sum(2 + len(m) for m in c_msgs)
    s_used = sum(2 + len(m) for m in s_msgs)
    for which, msg in zip((0, 5), c_msgs):
        corpus.put("handshake_messages", bytes([which]) + msg)
    for which, msg in zip((1, 3, 6), s_msgs):
        corpus.put("handshake_messages", bytes([which]) + msg)
    challenge = next((m for m in s_msgs if m[:1] == b"N" and len(m) >= 19), None)
    if challenge is not None:
        ours = challenge[9:13]
        corpus.put("handshake_acceptor", b"\x00" + ours + client[:c_used])
        nlen = int.from_bytes(challenge[17:19], "big")
        peer = challenge[19:19 + nlen]
        reply = next((m for m in c_msgs if m[:1] == b"r" and len(m) >= 5), None)
        if reply is not None and nlen < 256:
            corpus.put("handshake_initiator",
                       b"\x00" + reply[1:5] + bytes([nlen]) + peer + server[:s_used])
    for rest in (client[c_used:], server[s_used:]):
        frames, at, chunk = prefixed(rest, 4)[0], 0, bytearray()
        for f in frames:
            piece = len(f).to_bytes(4, "big") + f
            if chunk and len(chunk) + len(piece) > MAX_FILE:
                corpus.put("dist_frame", bytes(chunk))
                chunk = bytearray()
            chunk += piece
            if len(f) > 1 and len(f) + 4 <= MAX_FILE:
                corpus.put("dist_frame", piece)
        corpus.put("dist_frame", bytes(chunk[:MAX_FILE]))


def epmd(corpus, client, server):
    reqs, _ = prefixed(client, 2)
    if not reqs:
        return
    records = b"".join(b"\x05" + len(r).to_bytes(2, "big") + r for r in reqs)
    corpus.put("epmd_request", records)
    for r in reqs:
        corpus.put("epmd_request", b"\x05" + len(r).to_bytes(2, "big") + r)
    which = EPMD_WHICH.get(reqs[0][0])
    if which is not None and server:
        corpus.put("epmd_replies", bytes([which]) + server)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pcap")
    p.add_argument("corpus")
    p.add_argument("--epmd-port", type=int, required=True)
    p.add_argument("--dist-ports", required=True, help="comma-separated listen ports")
    p.add_argument("--terms", help="a directory of term_to_binary files")
    p.add_argument("--etcd-values", help="a directory of etcd node key values")
    a = p.parse_args()
    dist_ports = {int(x) for x in a.dist_ports.split(",")}
    corpus = Corpus(a.corpus)
    for cport, sport, client, server in connections(a.pcap):
        if sport == a.epmd_port:
            epmd(corpus, client, server)
        elif sport in dist_ports:
            handshake(corpus, client, server)
    if a.terms:
        for name in sorted(os.listdir(a.terms)):
            with open(os.path.join(a.terms, name), "rb") as f:
                corpus.put("term_decode", f.read())
    if a.etcd_values:
        for name in sorted(os.listdir(a.etcd_values)):
            with open(os.path.join(a.etcd_values, name), "rb") as f:
                corpus.put("etcd_value", f.read())
    for target, n in sorted(corpus.counts.items()):
        print(f"{target}: {n} new inputs")
    if not corpus.counts.get("handshake_acceptor") or not corpus.counts.get("epmd_request"):
        sys.exit("split: the capture holds no handshake or no EPMD request")


if __name__ == "__main__":
    main()
