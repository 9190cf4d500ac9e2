"""Creates a topic the moment a starting Keel's Kafka port accepts a
connection, as a script run right after `keel start` does (driven by
broker/tests/kafka_clients.rs).

usage: create_at_once.py DATA_DIR TOPIC

Started before the broker: waits for DATA_DIR/listeners.json (the ports the
node bound), connects to its Kafka port until a connection is accepted, and
at once creates TOPIC with confluent-kafka's AdminClient (40 s client
timeout). Exits 0 once the create is acknowledged and the topic is listed;
prints what went wrong and exits 1 otherwise.
"""

import json
import os
import socket
import sys
import time

from confluent_kafka.admin import AdminClient, NewTopic

# Liveness bounds for a loaded machine, not timings.
STARTUP_WAIT_S = 120
CLIENT_TIMEOUT_S = 40


def main():
    data_dir, topic = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + STARTUP_WAIT_S
    path = os.path.join(data_dir, "listeners.json")
    kafka = None
    while kafka is None:
        try:
            with open(path) as f:
                kafka = json.load(f)["kafka"]
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                print(f"no {path} within {STARTUP_WAIT_S} s")
                return 1
            time.sleep(0.005)
    host, port = kafka.rsplit(":", 1)
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print(f"{kafka} never accepted a connection")
                return 1
            time.sleep(0.005)
    admin = AdminClient({"bootstrap.servers": kafka})
    futures = admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=CLIENT_TIMEOUT_S)
    try:
        futures[topic].result(timeout=CLIENT_TIMEOUT_S + 5)
    except Exception as error:  # the client's own error says what happened
        print(f"create {topic} as soon as {kafka} accepted: {error}")
        return 1
    listed = admin.list_topics(timeout=CLIENT_TIMEOUT_S).topics
    if topic not in listed:
        print(f"{topic} acknowledged but not listed: {sorted(listed)}")
        return 1
    print(f"created {topic} as soon as {kafka} accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
