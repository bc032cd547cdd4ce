package policy

import (
	"strings"
	"testing"
)

func TestTenancyLookup(t *testing.T) {
	tn, err := NewTenancy(
		[]Org{{ID: "acme", Slug: "acme-corp"}, {ID: "globex"}, {ID: "o1", Slug: "o1"}},
		[]Product{
			{ID: 1337, Slug: "my-product-v1", Org: "acme"},
			{ID: 4242, Slug: "other-product", Org: "acme"},
			{ID: 9001, Slug: "globex-tracker", Org: "globex"},
			{ID: 77, Org: "o1"}, // no slug
		},
	)
	if err != nil {
		t.Fatal(err)
	}
	orgs := []struct {
		name, want string
	}{
		{"acme", "acme"},
		{"acme-corp", "acme"},
		{"globex", "globex"},
		{"o1", "o1"},
		{"ACME", ""},
		{"", ""},
		{"initech", ""},
	}
	for _, tt := range orgs {
		o, ok := tn.Org(tt.name)
		if tt.want == "" {
			if ok {
				t.Errorf("Org(%q) = %v; want none", tt.name, o)
			}
			continue
		}
		if !ok || o.ID != tt.want {
			t.Errorf("Org(%q) = %v, %v; want %s", tt.name, o, ok, tt.want)
		}
	}
	products := []struct {
		name string
		want int64
	}{
		{"1337", 1337},
		{"my-product-v1", 1337},
		{"4242", 4242},
		{"other-product", 4242},
		{"9001", 9001},
		{"globex-tracker", 9001},
		{"77", 77},
		{"01337", 0}, // not canonical: neither an ID nor a slug
		{"+1337", 0},
		{"-1337", 0},
		{"1337 ", 0},
		{"1e3", 0},
		{"0", 0},
		{"", 0},
		{"99999999999999999999", 0}, // overflows int64
		{"9223372036854775807", 0},  // fits, but no such product
		{"My-Product-v1", 0},
		{"unknown", 0},
	}
	for _, tt := range products {
		p, ok := tn.Product(tt.name)
		if tt.want == 0 {
			if ok {
				t.Errorf("Product(%q) = %v; want none", tt.name, p)
			}
			continue
		}
		if !ok || p.ID != tt.want {
			t.Errorf("Product(%q) = %v, %v; want %d", tt.name, p, ok, tt.want)
		}
	}
	if p, ok := tn.ProductByID(9001); !ok || p.Org != "globex" {
		t.Errorf("ProductByID(9001) = %v, %v", p, ok)
	}
	if _, ok := tn.ProductByID(1); ok {
		t.Error("ProductByID(1) found")
	}
	if len(tn.Orgs()) != 3 || tn.Orgs()[0].ID != "acme" || len(tn.Products()) != 4 || tn.Products()[3].ID != 77 {
		t.Errorf("Orgs() = %v, Products() = %v", tn.Orgs(), tn.Products())
	}

	var none *Tenancy
	if _, ok := none.Org("acme"); ok {
		t.Error("nil Tenancy found an org")
	}
	if _, ok := none.Product("1337"); ok {
		t.Error("nil Tenancy found a product")
	}
}

func TestNewTenancyCopies(t *testing.T) {
	orgs := []Org{{ID: "acme"}}
	products := []Product{{ID: 1, Slug: "p", Org: "acme"}}
	tn, err := NewTenancy(orgs, products)
	if err != nil {
		t.Fatal(err)
	}
	orgs[0].ID = "changed"
	products[0].Org = "changed"
	if o, ok := tn.Org("acme"); !ok || o.ID != "acme" {
		t.Error("tenancy changed with its input")
	}
	if p, _ := tn.Product("1"); p.Org != "acme" {
		t.Error("tenancy changed with its input")
	}
}

func TestNewTenancyErrors(t *testing.T) {
	acme := Org{ID: "acme"}
	tests := []struct {
		name     string
		orgs     []Org
		products []Product
		wants    []string
	}{
		{"org without ID", []Org{acme, {Slug: "x"}}, nil, []string{"org at index 1 has no ID"}},
		{"uppercase org ID", []Org{{ID: "Acme"}}, nil, []string{`org "Acme" (index 0)`, "lowercase"}},
		{"org ID with a dot", []Org{{ID: "ac.me"}}, nil, []string{`org "ac.me" (index 0)`}},
		{"org ID starting with -", []Org{{ID: "-acme"}}, nil, []string{`org "-acme" (index 0)`}},
		{"bad org slug", []Org{{ID: "acme", Slug: "Acme Corp"}}, nil, []string{`org "acme" (index 0): slug "Acme Corp"`}},
		{"duplicate org ID", []Org{acme, {ID: "acme"}}, nil, []string{`org "acme" (index 1): "acme" already names org "acme"`, "unique"}},
		{"slug is another org's ID", []Org{acme, {ID: "globex", Slug: "acme"}}, nil, []string{`org "globex" (index 1): "acme" already names org "acme"`}},
		{"ID is another org's slug", []Org{{ID: "acme", Slug: "globex"}, {ID: "globex"}}, nil, []string{`org "globex" (index 1): "globex" already names org "acme"`}},
		{"product ID zero", []Org{acme}, []Product{{Slug: "p", Org: "acme"}}, []string{`product "p" (index 0) has ID 0`, "positive"}},
		{"product ID negative", []Org{acme}, []Product{{ID: -5, Slug: "p", Org: "acme"}}, []string{`product "p" (index 0) has ID -5`}},
		{"duplicate product ID", []Org{acme}, []Product{{ID: 1, Slug: "a", Org: "acme"}, {ID: 1, Slug: "b", Org: "acme"}},
			[]string{`product 1 (index 1): the ID is already used by product "a"`}},
		{"numeric slug", []Org{acme}, []Product{{ID: 1, Slug: "1337", Org: "acme"}}, []string{`product 1 (index 0): slug "1337"`, "at least one letter"}},
		{"uppercase slug", []Org{acme}, []Product{{ID: 1, Slug: "My-Product", Org: "acme"}}, []string{`product 1 (index 0): slug "My-Product"`}},
		{"slug with a slash", []Org{acme}, []Product{{ID: 1, Slug: "a/b", Org: "acme"}}, []string{`product 1 (index 0): slug "a/b"`}},
		{"duplicate slug", []Org{acme}, []Product{{ID: 1, Slug: "p", Org: "acme"}, {ID: 2, Slug: "p", Org: "acme"}},
			[]string{`product 2 (index 1): slug "p" already names product 1`}},
		{"unknown org", []Org{acme}, []Product{{ID: 1, Slug: "p", Org: "globex"}}, []string{`product 1 (index 0) belongs to org "globex"`, "add the org"}},
		{"org by slug", []Org{{ID: "acme", Slug: "acme-corp"}}, []Product{{ID: 1, Slug: "p", Org: "acme-corp"}}, []string{`product 1 (index 0) belongs to org "acme-corp"`}},
		{"no org", []Org{acme}, []Product{{ID: 1, Slug: "p"}}, []string{`product 1 (index 0) belongs to org ""`}},
	}
	for _, tt := range tests {
		_, err := NewTenancy(tt.orgs, tt.products)
		if err == nil {
			t.Errorf("%s: NewTenancy succeeded; want an error", tt.name)
			continue
		}
		for _, want := range tt.wants {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q; want it to contain %q", tt.name, err, want)
			}
		}
	}
}

func TestTenancyLookupDoesNotAllocate(t *testing.T) {
	tn := exampleTenancy(t)
	for _, name := range []string{"1337", "my-product-v1", "01337", "unknown"} {
		if n := testing.AllocsPerRun(100, func() { tn.Product(name) }); n != 0 {
			t.Errorf("Product(%q) allocates %v times", name, n)
		}
	}
}
