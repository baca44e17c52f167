/**
 * A small typed helper over a Durable Object's SQLite storage: queries that
 * name themselves when they fail, and idempotent, versioned migrations kept in
 * a `_schema` row, run once per object start.
 */

export type SqlValue = string | number | null | ArrayBuffer;
type Row = Record<string, SqlValue>;

export interface Sql {
  all<T extends Row>(query: string, ...params: SqlValue[]): T[];
  one<T extends Row>(query: string, ...params: SqlValue[]): T | undefined;
  run(query: string, ...params: SqlValue[]): number;
}

export function sqlOf(storage: DurableObjectStorage): Sql {
  const exec = (query: string, params: SqlValue[]) => {
    try {
      return storage.sql.exec(query, ...params);
    } catch (cause) {
      throw new Error(`SQL failed: ${query.trim().split('\n')[0]}`, { cause });
    }
  };
  return {
    all: <T extends Row>(query: string, ...params: SqlValue[]) => exec(query, params).toArray() as T[],
    one: <T extends Row>(query: string, ...params: SqlValue[]) => exec(query, params).toArray()[0] as T | undefined,
    run: (query: string, ...params: SqlValue[]) => exec(query, params).rowsWritten,
  };
}

/**
 * Applies `migrations[i]` for every i at or above the stored schema version,
 * then stores the new version. Each migration is a list of statements.
 */
export function migrate(sql: Sql, migrations: readonly (readonly string[])[]): void {
  sql.run('CREATE TABLE IF NOT EXISTS _schema (version INTEGER NOT NULL)');
  const row = sql.one<{ version: number }>('SELECT version FROM _schema');
  const from = row?.version ?? 0;
  if (from >= migrations.length) return;
  for (let v = from; v < migrations.length; v++) for (const stmt of migrations[v]!) sql.run(stmt);
  if (row) sql.run('UPDATE _schema SET version = ?', migrations.length);
  else sql.run('INSERT INTO _schema (version) VALUES (?)', migrations.length);
}
