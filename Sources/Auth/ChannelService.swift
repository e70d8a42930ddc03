import FluentKit
public import Foundation
import Hummingbird
public import Logging
public import Storage
public import StreamHub
import Synchronization

/// Channels and their stream keys.
public final class ChannelService: Sendable {
    public struct ChannelView: Codable, Sendable, Equatable {
        public var name: String
        public var title: String
        public var description: String
        public var tags: [String]
        public var owner: String
        public var live: Bool
        public var createdAt: Date?
    }

    public struct KeyView: Codable, Sendable, Equatable {
        public var id: UUID
        /// `live_AbCd…wXyZ`: enough to tell keys apart, never enough to publish.
        public var hint: String
        public var createdAt: Date?
        public var lastUsedAt: Date?
    }

    /// The only time a key is shown whole.
    public struct CreatedKey: Codable, Sendable, Equatable {
        public var id: UUID
        public var key: String
        public var hint: String
        public var createdAt: Date?
    }

    public struct Changes: Sendable {
        public var title: String?
        public var description: String?
        public var tags: [String]?

        public init(title: String? = nil, description: String? = nil, tags: [String]? = nil) {
            self.title = title
            self.description = description
            self.tags = tags
        }
    }

    public static let maxChannelsPerUser = 20
    public static let maxKeysPerChannel = 10

    public let storage: Storage
    private let hub: StreamHub
    /// Which key each live channel went live with, so revoking that key ends the publish.
    private let liveKeys = Mutex<[String: UUID]>([:])
    private let logger: Logger

    public init(storage: Storage, hub: StreamHub, logger: Logger) {
        self.storage = storage
        self.hub = hub
        self.logger = logger
    }

    public func create(owner: Identity, name: String, title: String?, description: String?, tags: [String]?)
        async throws -> ChannelView {
        let name = try rule { () throws(AccountRules.Violation) in try AccountRules.channelName(name) }
        let title = try rule { () throws(AccountRules.Violation) in try AccountRules.text(title ?? name, field: "title", max: 140) }
        let description = try rule { () throws(AccountRules.Violation) in
            try AccountRules.text(description ?? "", field: "description", max: 5000)
        }
        let tags = try rule { () throws(AccountRules.Violation) in try AccountRules.tags(tags ?? []) }
        let database = storage.database
        if try await Channel.query(on: database).filter(\.$name == name).first() != nil {
            throw HTTPError(.conflict, message: "the channel name '\(name)' is taken")
        }
        if try await Channel.query(on: database).filter(\.$owner.$id == owner.userID).count() >= Self.maxChannelsPerUser {
            throw HTTPError(.conflict, message: "an account may own at most \(Self.maxChannelsPerUser) channels")
        }
        let channel = Channel(ownerID: owner.userID, name: name, title: title, description: description, tags: tags)
        do {
            try await channel.create(on: database)
        } catch let error as any DatabaseError where error.isConstraintFailure {
            throw HTTPError(.conflict, message: "the channel name '\(name)' is taken")
        }
        logger.info("channel created", metadata: ["channel": "\(name)"])
        return try await view(channel)
    }

    /// Channels `owner` owns (an admin: every channel).
    public func channels(of owner: Identity) async throws -> [ChannelView] {
        var query = Channel.query(on: storage.database).with(\.$owner).sort(\.$name)
        if !owner.isAdmin { query = query.filter(\.$owner.$id == owner.userID) }
        return try await query.all().map(view(loaded:))
    }

    /// The public view of a channel.
    public func channel(named name: String) async throws -> ChannelView {
        try await view(try await find(name))
    }

    public func update(_ name: String, by identity: Identity, changes: Changes) async throws -> ChannelView {
        let channel = try await owned(name, by: identity)
        if let title = changes.title {
            channel.title = try rule { () throws(AccountRules.Violation) in try AccountRules.text(title, field: "title", max: 140) }
        }
        if let description = changes.description {
            channel.about = try rule { () throws(AccountRules.Violation) in
                try AccountRules.text(description, field: "description", max: 5000)
            }
        }
        if let tags = changes.tags {
            channel.tags = try rule { () throws(AccountRules.Violation) in try AccountRules.tags(tags) }
        }
        try await channel.save(on: storage.database)
        return try await view(channel)
    }

    /// Deletes the channel and its keys; a live publish on it ends.
    public func delete(_ name: String, by identity: Identity) async throws {
        let channel = try await owned(name, by: identity)
        try await channel.delete(on: storage.database)
        if hub.stopPublishing(channel: name, reason: "channel deleted") {
            logger.info("publish ended: channel deleted", metadata: ["channel": "\(name)"])
        }
    }

    public func createKey(for name: String, by identity: Identity) async throws -> CreatedKey {
        let channel = try await owned(name, by: identity)
        let channelID = try channel.requireID()
        let database = storage.database
        if try await StreamKey.query(on: database).filter(\.$channel.$id == channelID).count() >= Self.maxKeysPerChannel {
            throw HTTPError(.conflict, message: "a channel may have at most \(Self.maxKeysPerChannel) keys; revoke one first")
        }
        let key = Credentials.newStreamKey()
        let stored = StreamKey(channelID: channelID, keyHash: Credentials.digest(key), hint: Credentials.hint(forKey: key))
        try await stored.create(on: database)
        logger.info("stream key created", metadata: ["channel": "\(name)", "hint": "\(stored.hint)"])
        return CreatedKey(id: try stored.requireID(), key: key, hint: stored.hint, createdAt: stored.createdAt)
    }

    public func keys(of name: String, by identity: Identity) async throws -> [KeyView] {
        let channel = try await owned(name, by: identity)
        return try await StreamKey.query(on: storage.database).filter(\.$channel.$id == channel.requireID())
            .sort(\.$createdAt).all()
            .map { KeyView(id: try $0.requireID(), hint: $0.hint, createdAt: $0.createdAt, lastUsedAt: $0.lastUsedAt) }
    }

    /// Revokes a key; a publish that went live with it ends at once.
    public func revokeKey(_ id: UUID, of name: String, by identity: Identity) async throws {
        let channel = try await owned(name, by: identity)
        guard let key = try await StreamKey.query(on: storage.database)
            .filter(\.$id == id).filter(\.$channel.$id == channel.requireID()).first()
        else { throw HTTPError(.notFound, message: "channel '\(name)' has no key \(id)") }
        try await key.delete(on: storage.database)
        logger.info("stream key revoked", metadata: ["channel": "\(name)", "hint": "\(key.hint)"])
        let wasLive = liveKeys.withLock { keys in
            guard keys[name] == id else { return false }
            keys[name] = nil
            return true
        }
        if wasLive, hub.stopPublishing(channel: name, reason: "stream key revoked") {
            logger.info("publish ended: its stream key was revoked", metadata: ["channel": "\(name)"])
        }
    }

    // MARK: Publishing

    /// The channel a stream key publishes to, if it is a key of this database. Records the use.
    public func channel(forKey key: String) async throws -> (channel: String, keyID: UUID)? {
        guard key.hasPrefix(Credentials.streamKeyPrefix), key.utf8.count <= 128 else { return nil }
        let hash = Credentials.digest(key)
        let database = storage.database
        guard let stored = try await StreamKey.query(on: database).filter(\.$keyHash == hash).with(\.$channel).first(),
              Credentials.constantTimeEqual(stored.keyHash, hash), let keyID = stored.id
        else { return nil }
        stored.lastUsedAt = Date()
        try await stored.save(on: database)
        return (stored.channel.name, keyID)
    }

    /// Whether any account exists. A server with accounts is a platform: publishing needs a key,
    /// even when every key has been revoked. Without accounts (and no other key source) it is open.
    public func hasAccounts() async throws -> Bool {
        try await User.query(on: storage.database).first() != nil
    }

    /// Called when a publish goes live: which key (if any of ours) it used.
    public func publishStarted(channel: String, keyID: UUID?) {
        // A second publish of a live channel is about to be refused: it must not take over the record.
        guard hub.stream(channel: channel) == nil else { return }
        liveKeys.withLock { $0[channel] = keyID }
    }

    // MARK: Helpers

    private func find(_ name: String) async throws -> Channel {
        guard name.utf8.count <= 64,
              let channel = try await Channel.query(on: storage.database).filter(\.$name == name).with(\.$owner).first()
        else { throw HTTPError(.notFound, message: "no channel named '\(name.prefix(64))'") }
        return channel
    }

    /// The channel, if `identity` owns it or is an admin: 404 when it does not exist, 403 otherwise.
    private func owned(_ name: String, by identity: Identity) async throws -> Channel {
        let channel = try await find(name)
        guard identity.isAdmin || channel.$owner.id == identity.userID else {
            throw HTTPError(.forbidden, message: "channel '\(name)' belongs to another account")
        }
        return channel
    }

    private func view(_ channel: Channel) async throws -> ChannelView {
        if channel.$owner.value == nil { try await channel.$owner.load(on: storage.database) }
        return view(loaded: channel)
    }

    private func view(loaded channel: Channel) -> ChannelView {
        ChannelView(name: channel.name, title: channel.title, description: channel.about, tags: channel.tags,
                    owner: channel.owner.username, live: hub.stream(channel: channel.name) != nil,
                    createdAt: channel.createdAt)
    }
}
