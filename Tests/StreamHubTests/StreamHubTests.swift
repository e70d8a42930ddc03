import MediaCore
import Synchronization
import Testing

@testable import StreamHub

private func video(_ dts: Int64, key: Bool = false, size: Int = 10) -> MediaPacket {
    MediaPacket(kind: .video, dts: dts, pts: dts, isKeyframe: key, data: [UInt8](repeating: 1, count: size))
}

private func audio(_ dts: Int64) -> MediaPacket {
    MediaPacket(kind: .audio, dts: dts, pts: dts, isKeyframe: true, data: [2, 2])
}

private let avcC = try! AVCDecoderConfigurationRecord(bytes: [1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xEE])
private let description = StreamDescription(video: .init(avcC: avcC))

@Suite("StreamHub")
struct StreamHubTests {
    @Test("a second publisher on a live channel is refused; after finish the channel is free")
    func exclusivePublish() async throws {
        let hub = StreamHub()
        let first = try await hub.startPublishing(channel: "main", app: "live")
        await #expect(throws: StreamHub.HubError.alreadyLive(channel: "main")) {
            try await hub.startPublishing(channel: "main", app: "live")
        }
        #expect(try await hub.registry.activeStreams().map(\.channel) == ["main"])
        await first.finish()
        #expect(try await hub.registry.activeStreams().isEmpty)
        let second = try await hub.startPublishing(channel: "main", app: "live")
        await second.finish()
    }

    @Test("observers hear of a stream before its first packet")
    func observers() async throws {
        let hub = StreamHub()
        let subscriptions = SubscriptionList()
        hub.observe { stream in subscriptions.append(stream.subscribe()) }
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        publisher.setDescription(description)
        publisher.send(video(0, key: true))
        await publisher.finish()
        var events: [StreamEvent] = []
        for await event in try #require(subscriptions.first) { events.append(event) }
        #expect(events == [.description(description), .packet(video(0, key: true))])
    }

    @Test("a late subscriber starts at the last keyframe with the codec setup")
    func gopCache() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        publisher.setDescription(description)
        publisher.send(video(0, key: true))
        publisher.send(video(33))
        publisher.send(video(66, key: true))
        publisher.send(audio(70))
        publisher.send(video(99))
        let subscription = publisher.stream.subscribe()
        publisher.send(video(132))
        await publisher.finish()
        var events: [StreamEvent] = []
        for await event in subscription { events.append(event) }
        #expect(events == [.description(description), .packet(video(66, key: true)), .packet(audio(70)),
                           .packet(video(99)), .packet(video(132))])
    }

    @Test("a late subscriber gets the metadata before the codec setup (onMetaData, then sequence headers), then the GOP")
    func metadataBeforeDescription() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let metadata = StreamMetadata(properties: [.init("width", .number(1280)), .init("encoder", .string("obs"))])
        // Whatever order the publisher sent them in, a subscriber that joins later gets metadata first.
        publisher.setDescription(description)
        publisher.setMetadata(metadata)
        publisher.send(video(0, key: true))
        publisher.send(audio(10))
        let subscription = publisher.stream.subscribe()
        await publisher.finish()
        var events: [StreamEvent] = []
        for await event in subscription { events.append(event) }
        #expect(events == [.metadata(metadata), .description(description), .packet(video(0, key: true)), .packet(audio(10))])
    }

    @Test("a slow consumer drops to the next keyframe; the publisher and a fast consumer lose nothing")
    func slowConsumer() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        publisher.setDescription(description)
        let slow = publisher.stream.subscribe(limits: .init(maxPackets: 15, maxBytes: 1 << 20))
        let fast = publisher.stream.subscribe(limits: .init(maxPackets: 1000, maxBytes: 1 << 20))
        // 30 packets: keyframes every 10. The slow consumer reads nothing until the end.
        for index in 0..<30 { publisher.send(video(Int64(index) * 33, key: index % 10 == 0)) }
        await publisher.finish()

        var fastPackets: [MediaPacket] = []
        for await event in fast { if case .packet(let packet) = event { fastPackets.append(packet) } }
        #expect(fastPackets.count == 30)
        #expect(fast.droppedPackets == 0)

        var slowPackets: [MediaPacket] = []
        for await event in slow { if case .packet(let packet) = event { slowPackets.append(packet) } }
        // Its queue (15 events with the description) overflowed at packet 14: packets 0–19 are
        // lost and it resumes on the keyframe at packet 20.
        #expect(slow.droppedPackets == 20)
        #expect(slowPackets.map(\.dts) == (20..<30).map { Int64($0) * 33 })
        #expect(slowPackets.first?.isKeyframe == true)
    }

    @Test("a consumer waiting for data is woken by the next packet and by the end")
    func waitingConsumer() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let subscription = publisher.stream.subscribe()
        async let first = subscription.next()
        // Wait until the consumer is parked on an empty queue, so the packet wakes it.
        while !subscription.isWaiting { await Task.yield() }
        publisher.send(audio(0))
        #expect(await first == .packet(audio(0)))
        async let end = subscription.next()
        await publisher.finish()
        #expect(await end == nil)
    }

    @Test("cancelling a subscription ends its sequence and unsubscribes it")
    func cancel() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let subscription = publisher.stream.subscribe()
        #expect(publisher.stream.statistics.subscribers == 1)
        subscription.cancel()
        #expect(await subscription.next() == nil)
        #expect(publisher.stream.statistics.subscribers == 0)
        await publisher.finish()
    }

    @Test("a consumer's task cancelled while the publisher is waking it: neither deadlocks, and the stream drops the subscription",
          .timeLimit(.minutes(1)))
    func cancelWhileSending() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let sending = Atomic<Bool>(true)
        let sender = Task.detached {
            var dts: Int64 = 0
            while sending.load(ordering: .relaxed) {
                publisher.send(audio(dts))
                dts += 1
            }
        }
        for _ in 0..<2000 {
            let subscription = publisher.stream.subscribe()
            let consumer = Task { while await subscription.next() != nil {} }
            await Task.yield()
            consumer.cancel()
            await consumer.value
        }
        sending.store(false, ordering: .relaxed)
        await sender.value
        publisher.send(audio(-1))
        #expect(publisher.stream.statistics.subscribers == 0)
        await publisher.finish()
    }

    @Test("a consumer's task cancelled while no media flows stops counting as a subscriber at once")
    func cancelWhileIdle() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let subscription = publisher.stream.subscribe()
        let consumer = Task { await subscription.next() }
        consumer.cancel()
        #expect(await consumer.value == nil)
        #expect(publisher.stream.statistics.subscribers == 0)
        await publisher.finish()
    }

    @Test("open mode takes the stream name as channel; keys map to channels; bad names are refused")
    func staticKeys() async {
        let open = StaticKeyAuthorizer(channelsByKey: [:])
        #expect(await open.authorize(PublishRequest(app: "live", streamKey: "my-show")) == .allow(channel: "my-show"))
        guard case .deny = await open.authorize(PublishRequest(app: "live", streamKey: "../etc")) else {
            Issue.record("a path-like name must be refused")
            return
        }
        let keyed = StaticKeyAuthorizer(channelsByKey: ["s3cret": "main"])
        #expect(await keyed.authorize(PublishRequest(app: "live", streamKey: "s3cret")) == .allow(channel: "main"))
        #expect(await keyed.authorize(PublishRequest(app: "live", streamKey: "main")) == .deny(reason: "unknown stream key"))
    }
}

/// Collects subscriptions made inside a synchronous observer.
final class SubscriptionList: Sendable {
    private let items = Mutex<[StreamSubscription]>([])
    func append(_ subscription: StreamSubscription) { items.withLock { $0.append(subscription) } }
    var first: StreamSubscription? { items.withLock { $0.first } }
}

@Suite("StreamHub demand")
struct StreamHubDemandTests {
    @Test("a viewer of a channel that is not live asks for it; viewers are counted until they leave")
    func demand() async throws {
        let hub = StreamHub()
        let asked = Mutex<[String]>([])
        hub.onDemand { channel in asked.withLock { $0.append(channel) } }

        let first = hub.addViewer(channel: "remote")
        #expect(asked.withLock { $0 } == ["remote"])
        #expect(hub.viewerCount(channel: "remote") == 1)
        // A second viewer asks again (the handler decides whether a pull is already running).
        let second = hub.addViewer(channel: "remote")
        #expect(asked.withLock { $0 } == ["remote", "remote"])
        #expect(hub.viewerCount(channel: "remote") == 2)

        // A viewer of a live channel asks for nothing.
        let publisher = try await hub.startPublishing(channel: "local", app: "live")
        let third = hub.addViewer(channel: "local")
        #expect(asked.withLock { $0 } == ["remote", "remote"])

        first.leave()
        first.leave()
        #expect(hub.viewerCount(channel: "remote") == 1, "leaving is idempotent")
        second.leave()
        #expect(hub.viewerCount(channel: "remote") == 0)
        third.leave()
        #expect(hub.viewerCount(channel: "local") == 0)
        await publisher.finish()
    }

    @Test("a viewer released without leave() stops counting")
    func released() {
        let hub = StreamHub()
        do {
            _ = hub.addViewer(channel: "c")
        }
        #expect(hub.viewerCount(channel: "c") == 0)
    }
}

@Suite("StreamSubscription push mode")
struct StreamSubscriptionPushTests {
    @Test("the readable handler fires once per poll cycle, not once per event; poll drains in order; the end is signalled")
    func signalling() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        let subscription = publisher.stream.subscribe()
        let calls = Atomic(0)
        subscription.setReadableHandler { calls.add(1, ordering: .relaxed) }
        // Nothing queued yet: no call.
        #expect(calls.load(ordering: .relaxed) == 0)
        #expect(subscription.poll() == .empty)
        publisher.send(audio(0))
        publisher.send(audio(20))
        publisher.send(audio(40))
        #expect(calls.load(ordering: .relaxed) == 1)
        #expect(subscription.poll(limit: 2) == .events([.packet(audio(0)), .packet(audio(20))]))
        // More left after a full batch: the consumer polls again by itself, so no new call for it.
        publisher.send(audio(60))
        #expect(calls.load(ordering: .relaxed) == 1)
        #expect(subscription.poll() == .events([.packet(audio(40)), .packet(audio(60))]))
        #expect(subscription.poll() == .empty)
        publisher.send(audio(80))
        #expect(calls.load(ordering: .relaxed) == 2)
        await publisher.finish()
        #expect(calls.load(ordering: .relaxed) == 3)
        // Queued events come before the end.
        #expect(subscription.poll() == .events([.packet(audio(80))]))
        #expect(subscription.poll() == .ended)
    }

    @Test("a handler set on a queue that already holds events (the GOP cache) is called at once")
    func handlerOnFullQueue() async throws {
        let hub = StreamHub()
        let publisher = try await hub.startPublishing(channel: "c", app: "live")
        publisher.setDescription(description)
        publisher.send(video(0, key: true))
        let subscription = publisher.stream.subscribe()
        let calls = Atomic(0)
        subscription.setReadableHandler { calls.add(1, ordering: .relaxed) }
        #expect(calls.load(ordering: .relaxed) == 1)
        #expect(subscription.queuedCount == 2)
        subscription.cancel()
        #expect(subscription.poll() == .events([.description(description), .packet(video(0, key: true))]))
        #expect(subscription.poll() == .ended)
        await publisher.finish()
    }
}
