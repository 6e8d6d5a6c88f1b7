package natsauth

import (
	"strconv"
	"strings"
)

// ConfFile is the name of the generated permissions file in deploy/.
const ConfFile = "permissions.conf"

// Conf renders the roles as a nats-server config fragment: one variable
// per role's permissions and the authorization block whose users take
// their public keys from the environment (EnvVar). deploy/*.conf include
// it; `switchboard nats-keys` writes the matching environment.
func Conf() string {
	var b strings.Builder
	b.WriteString("# Generated from internal/natsauth (go test ./deploy -run TestPermissionsFile -update);\n")
	b.WriteString("# do not edit. Each Switchboard component connects with its own NKey and\n")
	b.WriteString("# may publish and subscribe only where its role needs. The public keys come\n")
	b.WriteString("# from the environment: `switchboard nats-keys --out DIR` writes the seeds\n")
	b.WriteString("# and DIR/nats.env to source before starting nats-server.\n\n")
	for _, r := range Roles {
		rules := For(r)
		b.WriteString(permVar(r) + " = {\n")
		writeList(&b, "publish", rules.Publish)
		writeList(&b, "subscribe", rules.Subscribe)
		b.WriteString("}\n\n")
	}
	b.WriteString("authorization {\n  users: [\n")
	for _, r := range Roles {
		b.WriteString("    {nkey: $" + EnvVar(r) + ", permissions: $" + permVar(r) + "}\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func permVar(r Role) string { return "SB_PERMISSIONS_" + strings.ToUpper(string(r)) }

func writeList(b *strings.Builder, name string, subjects []string) {
	b.WriteString("  " + name + ": {allow: [\n")
	for _, s := range subjects {
		b.WriteString("    " + strconv.Quote(s) + "\n")
	}
	b.WriteString("  ]}\n")
}
