/// The codec setup of a live stream: what a consumer needs before the first packet.
public struct StreamDescription: Sendable, Equatable {
    public var video: VideoTrack?
    public var audio: AudioTrack?

    public init(video: VideoTrack? = nil, audio: AudioTrack? = nil) {
        self.video = video
        self.audio = audio
    }

    public struct VideoTrack: Sendable, Equatable {
        public var codec: VideoCodec
        public var avcC: AVCDecoderConfigurationRecord
        public init(codec: VideoCodec = .h264, avcC: AVCDecoderConfigurationRecord) {
            self.codec = codec
            self.avcC = avcC
        }
    }

    public struct AudioTrack: Sendable, Equatable {
        public var codec: AudioCodec
        public var config: AudioSpecificConfig
        public init(codec: AudioCodec = .aac, config: AudioSpecificConfig) {
            self.codec = codec
            self.config = config
        }
    }
}
