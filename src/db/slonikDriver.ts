import { Transform } from "node:stream";
import pg from "pg";
import QueryStream from "pg-query-stream";
import { getTypeParser } from "pg-types";
import { parse as parseArray } from "postgres-array";
import {
  BackendTerminatedError,
  BackendTerminatedUnexpectedlyError,
  CheckExclusionConstraintViolationError,
  CheckIntegrityConstraintViolationError,
  createDriverFactory,
  ForeignKeyIntegrityConstraintViolationError,
  IdleTransactionTimeoutError,
  InputSyntaxError,
  InvalidInputError,
  NotNullIntegrityConstraintViolationError,
  parseDsn,
  StatementCancelledError,
  StatementTimeoutError,
  UnexpectedStateError,
  UniqueIntegrityConstraintViolationError,
  type DriverCommand,
  type DriverConfiguration,
  type DriverFactory,
  type DriverTypeParser,
  type PrimitiveValueExpression,
} from "slonik";

/*
 * The driver of pgconverge's slonik pools: slonik's own pg driver (@slonik/pg-driver, its
 * default), the same client settings, type parsers, error classes and streams, with one
 * difference. To find the OIDs of its type parsers, slonik's driver opens a connection of its
 * own at createPool and gives it no "error" listener; when the server ends that connection
 * (57P01 on a failover or pg_terminate_backend, a reset) during the lookup, pg emits "error" on
 * it with nobody listening, and the process ends. A worker opens its pools at every start, so
 * a worker started again after a lost database (the bench adapter does) died of the very loss
 * it was riding out. Here that connection has a listener: the loss fails createPool, once,
 * with the connection's error. (slonik offers no way to reach that connection, and its driver
 * still opens it without a listener in 49.x; a driver of one's own is what createPool's
 * driverFactory option is for.)
 */

type TypeParserOf = (oid: number) => (value: string) => unknown;

/** The pg settings slonik's driver derives from a pool's configuration. */
function clientConfigurationOf(configuration: DriverConfiguration): pg.ClientConfig {
  const dsn = parseDsn(configuration.connectionUri);
  const client: pg.ClientConfig & { queryMode: "extended" } = {
    application_name: dsn.applicationName,
    database: dsn.databaseName,
    host: dsn.host,
    options: dsn.options,
    password: dsn.password,
    port: dsn.port,
    user: dsn.username,
    // Every statement as parse/bind/execute, also without parameters, as slonik's driver sends it.
    queryMode: "extended",
    ssl: configuration.ssl ?? (dsn.sslMode === "require" ? true : dsn.sslMode === "no-verify" ? { rejectUnauthorized: false } : false),
  };
  // slonik takes 0 for "at once", which pg reads as "none": 1 ms is the nearest it has.
  const milliseconds = (value: "DISABLE_TIMEOUT" | number) => (value === "DISABLE_TIMEOUT" ? undefined : value === 0 ? 1 : value);
  const connectionTimeout = milliseconds(configuration.connectionTimeout);
  const statementTimeout = milliseconds(configuration.statementTimeout);
  const idleInTransactionTimeout = milliseconds(configuration.idleInTransactionSessionTimeout);
  if (connectionTimeout !== undefined) client.connectionTimeoutMillis = connectionTimeout;
  if (statementTimeout !== undefined) client.statement_timeout = statementTimeout;
  if (idleInTransactionTimeout !== undefined) client.idle_in_transaction_session_timeout = idleInTransactionTimeout;
  return client;
}

/**
 * Looks up the OIDs of the type parsers (and of their array types) on a connection of its own,
 * closed after; the other types keep pg-types' parsers. A connection lost on the way fails the
 * lookup with its error.
 */
async function lookUpTypeParsers(client: pg.ClientConfig, typeParsers: readonly DriverTypeParser[]): Promise<TypeParserOf> {
  const connection = new pg.Client(client);
  // A connection that breaks under the lookup's query fails the query too; one that breaks
  // between statements fails the next with "not queryable", so its own error is kept to be
  // thrown instead. None can break unnoticed after the lookup: end() follows its result at once.
  let lost: Error | undefined;
  connection.on("error", (error) => (lost ??= error));
  try {
    await connection.connect();
    const { rows } = await connection.query<{ oid: number; typarray: number; typname: string }>(
      "select oid, typarray, typname from pg_type where typname = any($1::text[])",
      [typeParsers.map((typeParser) => typeParser.name)],
    );
    const parsers = new Map<number, (value: string) => unknown>();
    for (const typeParser of typeParsers) {
      const type = rows.find((row) => row.typname === typeParser.name);
      if (!type) throw new Error(`Database type "${typeParser.name}" not found.`);
      parsers.set(Number(type.oid), (value) => typeParser.parse(value));
      if (Number(type.typarray)) parsers.set(Number(type.typarray), (value) => parseArray(value).map((element) => typeParser.parse(element as string)));
    }
    return (oid) => parsers.get(oid) ?? (getTypeParser(oid) as (value: string) => unknown);
  } catch (error) {
    throw lost ?? error;
  } finally {
    await connection.end().catch(() => {});
  }
}

/** pg's errors as slonik's error classes, by SQLSTATE or, for a closed connection, by message. */
function slonikErrorOf(error: Error, query: { sql: string; values: readonly PrimitiveValueExpression[] } | null): Error {
  const message = error.message.toLowerCase();
  if (message.includes("connection terminated unexpectedly")) return new BackendTerminatedUnexpectedlyError(error);
  if (message.includes("connection terminated")) return new BackendTerminatedError(error);
  if (!("code" in error)) return error;
  const databaseError = error as pg.DatabaseError;
  switch (databaseError.code) {
    case "22P02":
      return new InvalidInputError(error.message);
    case "25P03":
      return new IdleTransactionTimeoutError(error);
    case "57P01":
      return new BackendTerminatedError(error);
    case "57014":
      return error.message.includes("canceling statement due to user request") ? new StatementCancelledError(error) : new StatementTimeoutError(error);
    case "23502":
      return new NotNullIntegrityConstraintViolationError(databaseError);
    case "23503":
      return new ForeignKeyIntegrityConstraintViolationError(databaseError);
    case "23505":
      return new UniqueIntegrityConstraintViolationError(databaseError);
    case "23P01":
      return new CheckExclusionConstraintViolationError(databaseError);
    case "23514":
      return new CheckIntegrityConstraintViolationError(databaseError);
    case "42601":
      return query ? new InputSyntaxError(error, query) : new UnexpectedStateError("Expected query to be provided");
    default:
      return error;
  }
}

/** slonik's pg driver, whose set-up connection (the type lookup) listens for its errors. */
export function createPgDriver(): DriverFactory {
  return createDriverFactory(async ({ driverConfiguration }) => {
    const settings = clientConfigurationOf(driverConfiguration);
    const typeParserOf = await lookUpTypeParsers(settings, driverConfiguration.typeParsers);
    const clientSettings: pg.ClientConfig = { ...settings, types: { getTypeParser: typeParserOf } as pg.CustomTypesConfig };
    return {
      createPoolClient: async ({ clientEventEmitter }) => {
        const client = new pg.Client(clientSettings);
        // slonik's pool logs a client's error and destroys the client.
        client.on("error", (error) => clientEventEmitter.emit("error", slonikErrorOf(error, null)));
        client.on("notice", (notice) => {
          if (notice.message) clientEventEmitter.emit("notice", { message: notice.message });
        });
        return {
          connect: async () => {
            await client.connect();
          },
          end: async () => {
            await client.end();
          },
          query: async (sql, values) => {
            let result: pg.QueryResult | pg.QueryResult[];
            try {
              result = await client.query(sql, values);
            } catch (error) {
              throw slonikErrorOf(error as Error, { sql, values: (values ?? []) as readonly PrimitiveValueExpression[] });
            }
            if (Array.isArray(result)) throw new InvalidInputError("Must not use multiple statements in a single query.");
            return {
              command: result.command as DriverCommand,
              fields: result.fields.map((field) => ({ dataTypeId: field.dataTypeID, name: field.name })),
              rowCount: result.rowCount,
              rows: result.rows,
            };
          },
          stream: (sql, values) => {
            const rows = client.query(new QueryStream(sql, values));
            // The description arrives once the stream is read, before its first row.
            let fields: Array<{ dataTypeId: number; name: string }> = [];
            client.connection.once("rowDescription", (description: { fields: Array<{ dataTypeID: number; name: string }> }) => {
              fields = description.fields.map((field) => ({ dataTypeId: field.dataTypeID, name: field.name }));
            });
            const withFields = new Transform({
              objectMode: true,
              transform(row, _encoding, callback) {
                callback(null, { fields, row });
              },
            });
            rows.on("error", (error) => withFields.emit("error", slonikErrorOf(error, { sql, values: (values ?? []) as readonly PrimitiveValueExpression[] })));
            return rows.pipe(withFields);
          },
        };
      },
    };
  });
}
