"""An HTTP/3 client for the edge's tests, on PyPI's aioquic (an implementation independent of
quinn and h3).

    h3client.py --connect 127.0.0.1:8443 --ca cert.pem [options] URL [URL ...]

Fetches every URL over one QUIC connection (in order, or all at once with --parallel) and
prints one JSON object per request: status, headers, body length and SHA-256, when the first
body byte and the end arrived (ms after the request was sent), and the error, if any
(`reset <code>` when the server reset the stream). --reset-after N resets each request stream
after N body bytes, as a viewer that gives up would; --header adds request header fields;
--pad-headers N adds an N-byte field, encoded here because aioquic's encoder refuses header
sections larger than the server allows (which is what the test wants to send). --resume sends
the requests as 0-RTT on a resumed session and reports whether the server took the early data.
--stall-header sends only the start of each request's HEADERS frame and waits, as a client
holding a stream open without a request would.
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StopSendingReceived, StreamReset


def varint(value):
    """A QUIC variable-length integer (RFC 9000 §16)."""
    for length, prefix in ((1, 0x00), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * length - 2):
            return (value | prefix << (8 * length - 8)).to_bytes(length, "big")
    raise ValueError("too large for a varint")


def qpack_int(value, prefix_bits, flags):
    """A QPACK/HPACK prefixed integer (RFC 7541 §5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_headers_frame(headers):
    """A HEADERS frame of literal field lines only (no static or dynamic table)."""
    block = b"\x00\x00"  # Required Insert Count 0, Delta Base 0
    for name, value in headers:
        block += qpack_int(len(name), 3, 0x20) + name
        block += qpack_int(len(value), 7, 0x00) + value
    return varint(0x01) + varint(len(block)) + block


class Exchange:
    def __init__(self, url, reset_after):
        self.url = url
        self.reset_after = reset_after
        self.status = None
        self.headers = {}
        self.body = bytearray()
        self.error = None
        self.started = time.monotonic()
        self.first_byte = None
        self.ended = None
        self.done = asyncio.get_event_loop().create_future()

    def finish(self, error=None):
        if self.done.done():
            return
        self.error = error
        self.ended = time.monotonic()
        self.done.set_result(None)

    def report(self):
        out = {"url": self.url, "status": self.status, "headers": self.headers}
        out["length"] = len(self.body)
        out["sha256"] = hashlib.sha256(self.body).hexdigest()
        if self.first_byte is not None:
            out["first_byte_ms"] = round((self.first_byte - self.started) * 1000, 1)
        if self.ended is not None:
            out["elapsed_ms"] = round((self.ended - self.started) * 1000, 1)
        if self.error:
            out["error"] = self.error
        return out


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.exchanges = {}
        self.stalled = set()

    def request(self, url, extra_headers, reset_after, pad=0, stall=False):
        parts = urlsplit(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        stream_id = self._quic.get_next_available_stream_id()
        exchange = Exchange(url, reset_after)
        self.exchanges[stream_id] = exchange
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", parts.netloc.encode()),
            (b":path", path.encode()),
            (b"user-agent", b"cascade-h3client/aioquic"),
        ] + [(k.encode(), v.encode()) for k, v in extra_headers]
        if stall:
            self.stalled.add(stream_id)
            frame = literal_headers_frame(headers)
            self._quic.send_stream_data(stream_id, frame[: len(frame) // 2], end_stream=False)
        elif pad:
            headers.append((b"x-pad", b"a" * pad))
            self._quic.send_stream_data(stream_id, literal_headers_frame(headers), end_stream=True)
        else:
            self.h3.send_headers(stream_id, headers, end_stream=True)
        self.transmit()
        return exchange

    def quic_event_received(self, event):
        if isinstance(event, StreamReset) and event.stream_id in self.exchanges:
            self.exchanges[event.stream_id].finish(f"reset {event.error_code}")
        # A server that has read a whole request may stop its sending side (H3_NO_ERROR); only
        # for a request still being sent does that end the exchange.
        if isinstance(event, StopSendingReceived) and event.stream_id in self.stalled:
            self.exchanges[event.stream_id].finish(f"stop sending {event.error_code}")
        if isinstance(event, ConnectionTerminated):
            for exchange in self.exchanges.values():
                exchange.finish(f"connection closed {event.error_code} {event.reason_phrase}")
        for h3_event in self.h3.handle_event(event):
            exchange = self.exchanges.get(getattr(h3_event, "stream_id", None))
            if exchange is None:
                continue
            if isinstance(h3_event, HeadersReceived):
                for name, value in h3_event.headers:
                    if name == b":status":
                        exchange.status = int(value)
                    else:
                        key = name.decode()
                        exchange.headers[key] = (
                            exchange.headers[key] + ", " + value.decode()
                            if key in exchange.headers
                            else value.decode()
                        )
            elif isinstance(h3_event, DataReceived):
                if h3_event.data and exchange.first_byte is None:
                    exchange.first_byte = time.monotonic()
                exchange.body += h3_event.data
                if exchange.reset_after is not None and len(exchange.body) >= exchange.reset_after:
                    self._quic.reset_stream(h3_event.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
                    self._quic.stop_stream(h3_event.stream_id, ErrorCode.H3_REQUEST_CANCELLED)
                    self.transmit()
                    exchange.finish("reset by client")
                    continue
            if getattr(h3_event, "stream_ended", False):
                exchange.finish()


async def run(args):
    host, _, port = args.connect.rpartition(":")
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.server_name = urlsplit(args.urls[0]).hostname
    if args.ca:
        configuration.load_verify_locations(args.ca)
    else:
        configuration.verify_mode = ssl.CERT_NONE
    headers = [h.split(":", 1) for h in args.header]
    headers = [(k.strip().lower(), v.strip()) for k, v in headers]
    handshake = None
    if args.resume:
        # A first connection only to be given a session ticket; the requests then go on a
        # second connection that resumes with it and sends them as 0-RTT early data (which the
        # server may accept or refuse; refused early data is sent again after the handshake).
        tickets = []
        async with connect(host, int(port), configuration=configuration, create_protocol=Client,
                           session_ticket_handler=tickets.append) as first:
            await first.ping()
            await asyncio.sleep(0.2)
        if not tickets:
            raise RuntimeError("the server issued no session ticket")
        configuration.session_ticket = tickets[-1]
    async with connect(host, int(port), configuration=configuration, create_protocol=Client,
                       wait_connected=not args.resume) as client:
        if args.parallel:
            exchanges = [client.request(u, headers, args.reset_after, args.pad_headers, args.stall_header)
                         for u in args.urls]
            await asyncio.wait_for(asyncio.gather(*(e.done for e in exchanges)), args.timeout)
        else:
            exchanges = []
            for url in args.urls:
                exchange = client.request(url, headers, args.reset_after, args.pad_headers, args.stall_header)
                exchanges.append(exchange)
                await asyncio.wait_for(exchange.done, args.timeout)
        if args.reset_after is not None:
            # Let the resets reach the server before the connection closes.
            await asyncio.sleep(0.2)
        tls = client._quic.tls
        handshake = {"handshake": {"session_resumed": tls.session_resumed,
                                   "early_data_accepted": tls.early_data_accepted}}
    for exchange in exchanges:
        print(json.dumps(exchange.report()), flush=True)
    if args.resume:
        print(json.dumps(handshake), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connect", required=True, help="host:port of the edge's UDP listener")
    parser.add_argument("--ca", help="PEM certificate to trust (default: trust anything)")
    parser.add_argument("--header", action="append", default=[], help="name: value")
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("--reset-after", type=int)
    parser.add_argument("--pad-headers", type=int, default=0)
    parser.add_argument("--stall-header", action="store_true")
    parser.add_argument("--resume", action="store_true", help="resume a session and send the requests as 0-RTT")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # one line the test can show
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
