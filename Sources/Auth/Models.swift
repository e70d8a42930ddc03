public import FluentKit
import Storage
import Foundation

/// An account. Email and username are stored lowercased, so uniqueness ignores case.
public final class User: Model, @unchecked Sendable {
    public static let schema = "users"

    public enum Role: String, Codable, Sendable {
        case user, admin
    }

    @ID(key: .id) public var id: UUID?
    @Field(key: "email") public var email: String
    @Field(key: "username") public var username: String
    @Field(key: "password_hash") var passwordHash: String
    @Field(key: "role") public var role: Role
    @Timestamp(key: "created_at", on: .create) public var createdAt: Date?

    public init() {}

    init(email: String, username: String, passwordHash: String, role: Role) {
        self.email = email
        self.username = username
        self.passwordHash = passwordHash
        self.role = role
    }
}

/// One refresh token, stored as its SHA-256. Tokens of one login share a family: a rotated
/// token that comes back means it was stolen, and the whole family is revoked.
final class RefreshToken: Model, @unchecked Sendable {
    static let schema = "refresh_tokens"

    @ID(key: .id) var id: UUID?
    @Parent(key: "user_id") var user: User
    @Field(key: "token_hash") var tokenHash: String
    @Field(key: "family_id") var familyID: UUID
    @Field(key: "expires_at") var expiresAt: Date
    /// Set when the token is rotated or its family is revoked.
    @OptionalField(key: "revoked_at") var revokedAt: Date?
    @Timestamp(key: "created_at", on: .create) var createdAt: Date?

    init() {}

    init(userID: UUID, tokenHash: String, familyID: UUID, expiresAt: Date) {
        self.$user.id = userID
        self.tokenHash = tokenHash
        self.familyID = familyID
        self.expiresAt = expiresAt
    }
}

/// A channel a user owns: its name is the path of its HLS (`/live/<name>/index.m3u8`).
public final class Channel: Model, @unchecked Sendable {
    public static let schema = "channels"

    @ID(key: .id) public var id: UUID?
    @Parent(key: "owner_id") public var owner: User
    @Field(key: "name") public var name: String
    @Field(key: "title") public var title: String
    @Field(key: "description") public var about: String
    /// Free-form labels (recommendations read them).
    @Field(key: "tags") public var tags: [String]
    @Timestamp(key: "created_at", on: .create) public var createdAt: Date?
    @Timestamp(key: "updated_at", on: .update) public var updatedAt: Date?

    public init() {}

    init(ownerID: UUID, name: String, title: String, description: String, tags: [String]) {
        self.$owner.id = ownerID
        self.name = name
        self.title = title
        self.about = description
        self.tags = tags
    }
}

/// A stream key, stored only as its SHA-256; `hint` (prefix and last 4 characters) lets its
/// owner tell keys apart.
final class StreamKey: Model, @unchecked Sendable {
    static let schema = "stream_keys"

    @ID(key: .id) var id: UUID?
    @Parent(key: "channel_id") var channel: Channel
    @Field(key: "key_hash") var keyHash: String
    @Field(key: "hint") var hint: String
    @Timestamp(key: "created_at", on: .create) var createdAt: Date?
    @OptionalField(key: "last_used_at") var lastUsedAt: Date?

    init() {}

    init(channelID: UUID, keyHash: String, hint: String) {
        self.$channel.id = channelID
        self.keyHash = keyHash
        self.hint = hint
    }
}

/// The schema, version by version. Fluent records each applied migration by name, so a
/// restart runs only what is new; names never change once released.
public enum AuthMigrations {
    public static var all: [any Migration] {
        [CreateUsers(), CreateRefreshTokens(), CreateChannels(), CreateStreamKeys()]
    }

    struct CreateUsers: AsyncMigration {
        var name: String { "estuary.v1.users" }

        func prepare(on database: any Database) async throws {
            try await database.schema(User.schema)
                .id()
                .field("email", .string, .required)
                .field("username", .string, .required)
                .field("password_hash", .string, .required)
                .field("role", .string, .required)
                .field("created_at", .datetime)
                .unique(on: "email")
                .unique(on: "username")
                .create()
        }

        func revert(on database: any Database) async throws {
            try await database.schema(User.schema).delete()
        }
    }

    struct CreateRefreshTokens: AsyncMigration {
        var name: String { "estuary.v1.refresh_tokens" }

        func prepare(on database: any Database) async throws {
            try await database.schema(RefreshToken.schema)
                .id()
                .field("user_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
                .field("token_hash", .string, .required)
                .field("family_id", .uuid, .required)
                .field("expires_at", .datetime, .required)
                .field("revoked_at", .datetime)
                .field("created_at", .datetime)
                .unique(on: "token_hash")
                .create()
            try await database.createIndex("refresh_tokens_family_id", on: RefreshToken.schema, columns: ["family_id"])
        }

        func revert(on database: any Database) async throws {
            try await database.schema(RefreshToken.schema).delete()
        }
    }

    struct CreateChannels: AsyncMigration {
        var name: String { "estuary.v1.channels" }

        func prepare(on database: any Database) async throws {
            try await database.schema(Channel.schema)
                .id()
                .field("owner_id", .uuid, .required, .references(User.schema, "id", onDelete: .cascade))
                .field("name", .string, .required)
                .field("title", .string, .required)
                .field("description", .string, .required)
                .field("tags", .array(of: .string), .required)
                .field("created_at", .datetime)
                .field("updated_at", .datetime)
                .unique(on: "name")
                .create()
            try await database.createIndex("channels_owner_id", on: Channel.schema, columns: ["owner_id"])
        }

        func revert(on database: any Database) async throws {
            try await database.schema(Channel.schema).delete()
        }
    }

    struct CreateStreamKeys: AsyncMigration {
        var name: String { "estuary.v1.stream_keys" }

        func prepare(on database: any Database) async throws {
            try await database.schema(StreamKey.schema)
                .id()
                .field("channel_id", .uuid, .required, .references(Channel.schema, "id", onDelete: .cascade))
                .field("key_hash", .string, .required)
                .field("hint", .string, .required)
                .field("created_at", .datetime)
                .field("last_used_at", .datetime)
                .unique(on: "key_hash")
                .create()
            try await database.createIndex("stream_keys_channel_id", on: StreamKey.schema, columns: ["channel_id"])
        }

        func revert(on database: any Database) async throws {
            try await database.schema(StreamKey.schema).delete()
        }
    }
}
