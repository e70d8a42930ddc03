import NIOCore
import Testing

@testable import Packaging

@Suite("Media playlist")
struct MediaPlaylistTests {
    @Test("renders the RFC 8216 live form, slides its window and counts discontinuities")
    func slidingWindow() {
        var playlist = MediaPlaylist(targetDuration: 2, windowLength: 3)
        for sequence in 0..<5 {
            playlist.append(.init(sequence: sequence, duration: sequence == 3 ? 2.4 : 2.002, discontinuity: sequence == 1,
                                  uri: "\(sequence).ts"))
        }
        #expect(playlist.render() == """
            #EXTM3U
            #EXT-X-VERSION:3
            #EXT-X-TARGETDURATION:2
            #EXT-X-MEDIA-SEQUENCE:2
            #EXT-X-DISCONTINUITY-SEQUENCE:1
            #EXTINF:2.002,
            2.ts
            #EXTINF:2.400,
            3.ts
            #EXTINF:2.002,
            4.ts

            """)
        playlist.end()
        #expect(playlist.render().hasSuffix("4.ts\n#EXT-X-ENDLIST\n"))
    }

    @Test("a segment longer than the target raises TARGETDURATION to its rounded length, for good")
    func targetDuration() {
        var playlist = MediaPlaylist(targetDuration: 2, windowLength: 2)
        playlist.append(.init(sequence: 0, duration: 4.6, discontinuity: false, uri: "0.ts"))
        for sequence in 1...3 { playlist.append(.init(sequence: sequence, duration: 2, discontinuity: false, uri: "\(sequence).ts")) }
        #expect(playlist.targetDuration == 5)
        #expect(playlist.entries.allSatisfy { Int($0.duration.rounded()) <= playlist.targetDuration })
    }

    @Test("EXTINF has three decimals without locale", arguments: [(2.0, "2.000"), (0.0334, "0.033"), (10.9996, "11.000")])
    func format(seconds: Double, text: String) {
        #expect(MediaPlaylist.format(seconds) == text)
    }

    @Test("the store keeps segments one window past the playlist, then evicts them")
    func retention() {
        let store = SegmentStore(retainedAfterWindow: 2)
        for sequence in 0..<6 {
            store.add(channel: "c", entry: .init(sequence: sequence, duration: 2, discontinuity: false, uri: "\(sequence).ts"),
                      data: ByteBuffer(bytes: [UInt8(sequence)]), newPlaylist: MediaPlaylist(targetDuration: 2, windowLength: 2))
        }
        // Listed: 4, 5. Retained after leaving: 2, 3. Gone: 0, 1.
        #expect(store.playlistModel(channel: "c")?.entries.map(\.sequence) == [4, 5])
        #expect((0..<6).map { store.segment(channel: "c", sequence: $0) != nil } == [false, false, true, true, true, true])
        #expect(store.playlist(channel: "other") == nil)
        #expect(store.end(channel: "c")?.hasSuffix("#EXT-X-ENDLIST\n") == true)
    }
}
