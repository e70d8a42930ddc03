import Auth
import Foundation
public import Logging
import Metrics
import NIOPosix
import Storage
import StreamHub

/// What `estuary users create` and `estuary keys create` do: the database work of the API, for an
/// operator at the server's shell (the first admin cannot come from the API).
public enum Operator {
    public struct CreatedKey: Sendable {
        public let channel: String
        public let key: String
        public let hint: String
    }

    /// Creates an account; returns its id.
    public static func createUser(_ configuration: EstuaryConfiguration, email: String, username: String,
                                  password: String, admin: Bool, logger: Logger) async throws -> String {
        try await withServices(configuration, logger: logger) { accounts, _ in
            let user = try await accounts.register(email: email, username: username, password: password,
                                                   role: admin ? .admin : .user)
            return user.id?.uuidString ?? "?"
        }
    }

    /// Creates a stream key for `channel`; the channel is created for `owner` (a username) if it
    /// does not exist yet.
    public static func createKey(_ configuration: EstuaryConfiguration, channel: String, owner: String?,
                                 logger: Logger) async throws -> CreatedKey {
        try await withServices(configuration, logger: logger) { accounts, channels in
            let identity: Identity
            if let owner {
                guard let user = try await accounts.users().first(where: { $0.username == owner.lowercased() }) else {
                    throw OperatorError(description: "no account named '\(owner)'")
                }
                guard let userID = user.id else { throw OperatorError(description: "account '\(owner)' has no id") }
                identity = Identity(userID: userID, role: user.role)
                if (try? await channels.channel(named: channel)) == nil {
                    _ = try await channels.create(owner: identity, name: channel, title: nil, description: nil, tags: nil)
                }
            } else {
                // The operator acts as an administrator of every channel.
                _ = try await channels.channel(named: channel)
                identity = Identity(userID: UUID(), role: .admin)
            }
            let key = try await channels.createKey(for: channel, by: identity)
            return CreatedKey(channel: channel, key: key.key, hint: key.hint)
        }
    }

    struct OperatorError: Error, CustomStringConvertible {
        let description: String
    }

    private static func withServices<T: Sendable>(
        _ configuration: EstuaryConfiguration, logger: Logger,
        _ body: (AccountService, ChannelService) async throws -> T
    ) async throws -> T {
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        let storage = try await Storage.open(try configuration.databaseLocation, migrations: AuthMigrations.all,
                                             eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger)
        do {
            let secret = try JWTSecret.load(configured: configuration.jwtSecret, dataDirectory: configuration.dataDirectory)
            let accounts = AccountService(
                storage: storage, accessTokens: await AccessTokens(secret: secret, lifetime: configuration.accessTokenLifetime),
                bcryptCost: configuration.bcryptCost, metrics: NOOPMetricsHandler.instance, logger: logger)
            let channels = ChannelService(storage: storage, hub: StreamHub(logger: logger), logger: logger)
            let result = try await body(accounts, channels)
            await storage.close()
            return result
        } catch {
            await storage.close()
            throw error
        }
    }
}
