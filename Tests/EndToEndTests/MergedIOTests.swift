import NIOCore
import NIOEmbedded
import Testing

@testable import IngestServer

/// Counts the reads that reach the socket (it sits between the pacer and the head).
private final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

private final class TickRecorder: LoopTickerClient {
    var ticks = 0
    func tick() { ticks += 1 }
}

@Suite("Merged read and write")
struct MergedIOTests {
    @Test("before pacing starts reads pass at once; after, one read per tick however many are asked for")
    func readPacing() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let counter = ReadCounter()
        let pacer = ReadPacer(interval: .milliseconds(100))
        try channel.pipeline.syncOperations.addHandlers([counter, pacer])
        channel.read()
        #expect(counter.reads == 1)
        pacer.startPacing()
        channel.read()
        channel.read()
        #expect(counter.reads == 1)
        #expect(pacer.readDeferred)
        loop.advanceTime(by: .milliseconds(99))
        #expect(counter.reads == 1)
        loop.advanceTime(by: .milliseconds(1))
        #expect(counter.reads == 2)
        #expect(!pacer.readDeferred)
        // Nothing asked for: the ticker stays unarmed and no read happens.
        loop.advanceTime(by: .seconds(1))
        #expect(counter.reads == 2)
        _ = try channel.finish()
    }

    @Test("after a full burst the next read goes at once: pacing never caps a high-bitrate publisher")
    func fullBurst() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let counter = ReadCounter()
        let pacer = ReadPacer(interval: .milliseconds(100))
        try channel.pipeline.syncOperations.addHandlers([counter, pacer])
        pacer.startPacing()
        // A small burst: the next read waits for the tick.
        try channel.writeInbound(ByteBuffer(repeating: 1, count: 1000))
        channel.read()
        #expect(counter.reads == 0)
        loop.advanceTime(by: .milliseconds(100))
        #expect(counter.reads == 1)
        // A full one: at once, and the count starts again.
        try channel.writeInbound(ByteBuffer(repeating: 1, count: ReadPacer.fullBurst))
        channel.read()
        #expect(counter.reads == 2)
        channel.read()
        #expect(counter.reads == 2)
        loop.advanceTime(by: .milliseconds(100))
        #expect(counter.reads == 3)
        while try channel.readInbound(as: ByteBuffer.self) != nil {}
        _ = try channel.finish()
    }

    @Test("a read deferred when the connection closes is dropped")
    func closeDropsDeferredRead() throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        let counter = ReadCounter()
        let pacer = ReadPacer(interval: .milliseconds(50))
        try channel.pipeline.syncOperations.addHandlers([counter, pacer])
        pacer.startPacing()
        channel.read()
        try channel.close().wait()
        loop.advanceTime(by: .milliseconds(100))
        #expect(counter.reads == 0)
    }

    @Test("a zero interval never paces")
    func zeroInterval() throws {
        let channel = EmbeddedChannel()
        let counter = ReadCounter()
        let pacer = ReadPacer(interval: .zero)
        try channel.pipeline.syncOperations.addHandlers([counter, pacer])
        pacer.startPacing()
        channel.read()
        channel.read()
        #expect(counter.reads == 2)
        _ = try channel.finish()
    }

    @Test("the ticker calls every client scheduled since the last tick once, in one turn; a client may schedule itself again")
    func ticker() {
        let loop = EmbeddedEventLoop()
        let ticker = LoopTicker.on(loop, interval: .milliseconds(100))
        #expect(LoopTicker.on(loop, interval: .milliseconds(100)) === ticker)
        let (a, b) = (TickRecorder(), TickRecorder())
        ticker.schedule(a)
        loop.advanceTime(by: .milliseconds(60))
        ticker.schedule(b)
        // Both go at the first tick, 100 ms after the ticker was armed.
        loop.advanceTime(by: .milliseconds(40))
        #expect(a.ticks == 1 && b.ticks == 1)
        ticker.schedule(a)
        loop.advanceTime(by: .milliseconds(100))
        #expect(a.ticks == 2 && b.ticks == 1)
    }
}
