package billing

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgconn"
)

func migrationNames(t *testing.T) []string {
	t.Helper()
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Fatalf("migrations out of order: %s after %s", m.Name, ms[i-1].Name)
		}
		names = append(names, m.Name)
	}
	if len(names) == 0 {
		t.Fatal("no embedded migrations")
	}
	return names
}

func TestMigrateIsIdempotent(t *testing.T) {
	ctx := testCtx(t)
	pool := newPool(t)
	all := migrationNames(t)

	first, err := ApplyMigrations(ctx, pool)
	if err != nil {
		t.Fatalf("first run: %v", err)
	}
	if !slices.Equal(first, all) {
		t.Fatalf("first run applied %v, want %v", first, all)
	}
	for run := 2; run <= 3; run++ {
		again, err := ApplyMigrations(ctx, pool)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if len(again) != 0 {
			t.Fatalf("run %d applied %v, want nothing", run, again)
		}
	}
	recorded, err := AppliedMigrations(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != len(all) {
		t.Fatalf("schema_migrations has %d rows, want %d", len(recorded), len(all))
	}
	for i, r := range recorded {
		if r.Name != all[i] || r.AppliedAt.IsZero() {
			t.Errorf("row %d = %+v, want %s with a time", i, r, all[i])
		}
	}
}

func TestMigrateConcurrentRunsApplyEachOnce(t *testing.T) {
	ctx := testCtx(t)
	pool := newPool(t)
	all := migrationNames(t)

	const runs = 2
	var wg sync.WaitGroup
	results := make([][]string, runs)
	errs := make([]error, runs)
	for i := range runs {
		wg.Go(func() { results[i], errs[i] = ApplyMigrations(ctx, pool) })
	}
	wg.Wait()
	var got []string
	for i := range runs {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		got = append(got, results[i]...)
	}
	slices.Sort(got)
	if !slices.Equal(got, all) {
		t.Fatalf("the runs applied %v together, want each of %v exactly once", got, all)
	}
}

func TestMigrateFailureRollsBackThatMigration(t *testing.T) {
	ctx := testCtx(t)
	pool := newPool(t)
	ms := []Migration{
		{Version: 1, Name: "0001_ok", SQL: `CREATE TABLE ok_table (id int);`},
		{Version: 2, Name: "0002_bad", SQL: `CREATE TABLE half_done (id int); SELECT 1/0;`},
		{Version: 3, Name: "0003_never", SQL: `CREATE TABLE never_table (id int);`},
	}
	applied, err := applyMigrations(ctx, pool, ms)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22012" || !strings.Contains(err.Error(), "0002_bad") {
		t.Fatalf("error = %v, want division_by_zero naming 0002_bad", err)
	}
	if !slices.Equal(applied, []string{"0001_ok"}) {
		t.Fatalf("applied = %v, want [0001_ok]", applied)
	}
	for table, want := range map[string]bool{"ok_table": true, "half_done": false, "never_table": false} {
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists != want {
			t.Errorf("table %s exists = %v, want %v", table, exists, want)
		}
	}
	// Fixed and re-run, it picks up where it stopped.
	ms[1].SQL = `CREATE TABLE half_done (id int);`
	applied, err = applyMigrations(ctx, pool, ms)
	if err != nil || !slices.Equal(applied, []string{"0002_bad", "0003_never"}) {
		t.Fatalf("re-run applied %v, %v", applied, err)
	}
}

func TestLoadMigrations(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	tests := []struct {
		name    string
		files   fstest.MapFS
		want    []string
		wantErr string
	}{
		{"sorted numerically", fstest.MapFS{"m/0010_b.sql": sql, "m/0002_a.sql": sql, "m/0100_c.sql": sql},
			[]string{"0002_a", "0010_b", "0100_c"}, ""},
		{"bad name", fstest.MapFS{"m/0001_ok.sql": sql, "m/init.sql": sql}, nil, "is not NNNN_name.sql"},
		{"upper case", fstest.MapFS{"m/0001_Init.sql": sql}, nil, "is not NNNN_name.sql"},
		{"three digits", fstest.MapFS{"m/001_b.sql": sql}, nil, "is not NNNN_name.sql"},
		{"not sql", fstest.MapFS{"m/0001_a.txt": sql}, nil, "is not NNNN_name.sql"},
		{"duplicate version", fstest.MapFS{"m/0001_a.sql": sql, "m/0001_c.sql": sql}, nil, "share version 1"},
		{"same number, other padding", fstest.MapFS{"m/0001_a.sql": sql, "m/00001_c.sql": sql}, nil, "share version 1"},
		{"missing dir", fstest.MapFS{}, nil, "load migrations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := loadMigrations(tt.files, "m")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range ms {
				names = append(names, m.Name)
			}
			if !slices.Equal(names, tt.want) {
				t.Fatalf("names = %v, want %v", names, tt.want)
			}
		})
	}
}
