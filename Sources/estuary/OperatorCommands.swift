import App
import ArgumentParser
import Foundation
import Hummingbird
import Logging

/// Where the operator commands find the database: the same flags and variables as `serve`.
struct DatabaseOptions: ParsableArguments {
    @Option(help: "The server's data directory. [ESTUARY_DATA_DIR, default ./estuary-data]")
    var dataDir: String?
    @Option(help: "postgres://… for PostgreSQL; default: SQLite in the data directory. [ESTUARY_DATABASE_URL]")
    var databaseUrl: String?

    func configuration(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> EstuaryConfiguration {
        var configuration = EstuaryConfiguration()
        configuration.dataDirectory = dataDir ?? environment["ESTUARY_DATA_DIR"] ?? configuration.dataDirectory
        configuration.databaseURL = databaseUrl ?? environment["ESTUARY_DATABASE_URL"]
        configuration.jwtSecret = environment["ESTUARY_JWT_SECRET"]
        do {
            _ = try configuration.databaseLocation
        } catch {
            throw ValidationError("\(error)")
        }
        return configuration
    }
}

/// Errors of the operator commands, as one line without the HTTP wrapping.
private func operatorMessage(_ error: any Error) -> String {
    if let error = error as? HTTPError { return error.body ?? "\(error.status)" }
    return "\(error)"
}

private func quietLogger() -> Logger {
    var logger = Logger(label: "estuary")
    logger.logLevel = .warning
    return logger
}

struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage accounts.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an account (with --admin, an administrator: how the first admin is made).")

        @Option(help: "Email address.") var email: String
        @Option(help: "Username: 3–32 of a-z, 0-9, '-', '_'.") var username: String
        @Option(help: "Password (10–72 bytes). Prefer --password-stdin: arguments show in `ps`.") var password: String?
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @Flag(help: "Make the account an administrator.") var admin = false
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let secret: String
            if passwordStdin {
                guard let line = readLine(strippingNewline: true) else { throw ValidationError("no password on standard input") }
                secret = line
            } else if let password {
                secret = password
            } else {
                throw ValidationError("give --password or --password-stdin")
            }
            do {
                let id = try await Operator.createUser(try database.configuration(), email: email, username: username,
                                                       password: secret, admin: admin, logger: quietLogger())
                print("created \(admin ? "admin" : "user") \(username.lowercased()) (\(id))")
            } catch let error as ValidationError {
                throw error
            } catch {
                FileHandle.standardError.write(Data("estuary users create: \(operatorMessage(error))\n".utf8))
                throw ExitCode.failure
            }
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage stream keys.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a stream key for a channel and print it (shown this once; only its hash is kept).")

        @Option(help: "The channel the key publishes to.") var channel: String
        @Option(help: "Create the channel for this username if it does not exist.") var owner: String?
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            do {
                let created = try await Operator.createKey(try database.configuration(), channel: channel, owner: owner,
                                                           logger: quietLogger())
                print(created.key)
                FileHandle.standardError.write(Data(
                    "stream key for channel \(created.channel) (\(created.hint)); publish to rtmp://HOST/live/<key>, watch /live/\(created.channel)/index.m3u8\n".utf8))
            } catch let error as ValidationError {
                throw error
            } catch {
                FileHandle.standardError.write(Data("estuary keys create: \(operatorMessage(error))\n".utf8))
                throw ExitCode.failure
            }
        }
    }
}
