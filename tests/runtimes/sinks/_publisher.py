"""A device-like process for the crash tests: run with ``python _publisher.py URI MODE [N]``.

Modes: ``events N`` publishes N anomaly events (``details.seq`` = 0..N-1) and prints each
event_id once ``publish_event`` has returned (so it is durably in the outbox), then idles;
``nowait N`` does the same with ``wait=False`` in bursts of ten, printing each event_id once
its receipt says it is committed; ``online`` prints "online" once connected, then idles; ``drain`` sends what the outbox
holds, prints the stats as JSON and exits 0 if everything was delivered. Idling processes
wait to be killed: that is the point.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time

from factoryedge.runtimes.messages import anomaly_payload
from factoryedge.runtimes.sinks.mqtt import MqttSink


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    uri, mode = sys.argv[1], sys.argv[2]
    sink = MqttSink.from_uri(uri)
    if mode in ("events", "nowait"):
        handed = []
        for seq in range(int(sys.argv[3])):
            now = time.time()
            event = anomaly_payload(sink.identity, severity="alarm", score=3.0, threshold=1.0,
                                    window_start=now - 1, window_end=now, model_name="test",
                                    model_version="1", details={"seq": seq})
            if mode == "events":
                sink.publish_anomaly(event)
                print(event.event_id, flush=True)
            else:
                handed.append((event.event_id, sink.publish_anomaly(event, wait=False)))
                if seq % 10 == 9:
                    time.sleep(0.002)  # bursts of ten, so a kill lands mid-run, not after the end
                while handed and handed[0][1].done():
                    handed[0][1].result()
                    print(handed.pop(0)[0], flush=True)
        for event_id, receipt in handed:
            receipt.result()
            print(event_id, flush=True)
        print("done", flush=True)
    elif mode == "online":
        if not sink.wait_connected(10):
            return 2
        print("online", flush=True)
    elif mode == "drain":
        flushed = sink.flush(20)
        print(json.dumps(dataclasses.asdict(sink.stats())), flush=True)
        sink.close(5)
        return 0 if flushed else 1
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
